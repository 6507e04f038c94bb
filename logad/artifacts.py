"""Model bundles that describe themselves and load safely.

A bundle is a folder:
    weights.safetensors   model tensors (safetensors: no pickle, nothing executes on load)
    manifest.json         model config, window rule, vocab file + sha256, weights sha256, training
                          config, data hashes, git commit, metrics
    template_vocab.json   the frozen vocab the ids refer to
    format.toml           (bundles made by `logad train`) the log format file, verbatim
    thresholds.json       (after `logad calibrate`) decision thresholds + the model hash they fit
    reference.safetensors (after calibrate) normal count-vector reference + seen-template mask
Loading checks that every hash, size and shape agrees and raises ArtifactError with one line if not.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from logad.errors import ArtifactError, ConfigError, LogadError
from logad.windows import WindowRule
from logad.templates import TemplateVocab

if TYPE_CHECKING:  # torch is imported where weights are read or written: the streaming worker reads
    import torch  # manifests and vocabs only and must not pay ~500 MB of RSS for a module it never uses

    from logad.model import NextTokenTransformer

FORMAT = "logad-model/1"
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
VOCAB = "template_vocab.json"
LOG_FORMAT = "format.toml"  # the log format file a bundle was trained with (absent: a built-in format)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_json(path: str | Path, obj: Any) -> None:
    Path(path).write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
                                        | orjson.OPT_SERIALIZE_NUMPY))


def read_json(path: str | Path, what: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{what} {p} is missing")
    try:
        return orjson.loads(p.read_bytes())
    except orjson.JSONDecodeError as e:
        raise ArtifactError(f"{what} {p} is not valid JSON ({e})") from None


def save_bundle(
    out_dir: str | Path, model: NextTokenTransformer, vocab: TemplateVocab, rule: WindowRule,
    extra: dict | None = None,
) -> dict:
    """Write weights + vocab + manifest; returns the manifest."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "head.weight"}
    save_file(state, str(out / WEIGHTS), metadata={"format": FORMAT})
    vocab.save(out / VOCAB)
    manifest = {
        "format": FORMAT,
        "model_config": model.cfg.to_dict(),
        "window": {"length": rule.length, "stride": rule.stride},
        "vocab": {"file": VOCAB, "sha256": sha256_file(out / VOCAB), "size": len(vocab)},
        "weights": {"file": WEIGHTS, "sha256": sha256_file(out / WEIGHTS), "n_params": model.num_params()},
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def write_format(out_dir: str | Path, fmt: Any) -> dict | None:
    """Store a format read from a file (its TOML text, verbatim) in a bundle; None for a built-in."""
    if not fmt.source_text:
        return None
    p = Path(out_dir) / LOG_FORMAT
    p.write_text(fmt.source_text, encoding="utf-8")
    return {"file": LOG_FORMAT, "sha256": sha256_file(p), "name": fmt.name}


def bundle_format(model_dir: str | Path, format_name: str | None = None) -> Any:
    """The LogFormat of a bundle: its format.toml (checked against the manifest's hash when the
    manifest records one), else the built-in format its vocab names."""
    from logad.format_files import format_from_text
    from logad.formats import FORMATS

    d = Path(model_dir)
    p = d / LOG_FORMAT
    if p.is_file():
        manifest = read_json(d / MANIFEST, "model manifest") if (d / MANIFEST).is_file() else {}
        meta = manifest.get("log_format") if isinstance(manifest, dict) else None
        if isinstance(meta, dict) and meta.get("sha256") != sha256_file(p):
            raise ArtifactError(f"{p}: sha256 differs from the manifest (the format file was edited after training)")
        try:
            return format_from_text(p.read_text(encoding="utf-8"), origin=str(p))
        except (OSError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{p}: cannot read the format file ({e})") from None
    if format_name in FORMATS:
        return FORMATS[format_name]
    raise ArtifactError(f"model {d} has no {LOG_FORMAT} and its vocab names no built-in format "
                        f"({format_name!r}): pass --format")


@dataclass
class Bundle:
    path: Path
    model: NextTokenTransformer
    vocab: TemplateVocab
    rule: WindowRule
    manifest: dict

    @property
    def version(self) -> str:
        """Short model version used in every score and alert: name + first 12 hex of the weights hash."""
        return f"{self.path.name}-{self.manifest['weights']['sha256'][:12]}"

    @property
    def weights_sha256(self) -> str:
        return self.manifest["weights"]["sha256"]


def load_bundle(path: str | Path, device: torch.device | str = "cpu") -> Bundle:
    """Load and verify a bundle; any inconsistency raises ArtifactError (one line)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from logad.model import ModelConfig, NextTokenTransformer

    p = Path(path)
    if not p.is_dir():
        raise ArtifactError(f"model folder {p} does not exist")
    manifest = read_json(p / MANIFEST, "model manifest")
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{p / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    try:
        cfg = ModelConfig(**manifest["model_config"])
        rule = WindowRule(**manifest["window"])
        weights_meta, vocab_meta = manifest["weights"], manifest["vocab"]
    except (KeyError, TypeError, ConfigError) as e:
        raise ArtifactError(f"{p / MANIFEST}: malformed manifest ({e})") from None
    wpath, vpath = p / weights_meta["file"], p / vocab_meta["file"]
    for f in (wpath, vpath):
        if not f.is_file():
            raise ArtifactError(f"model file {f} is missing")
    if sha256_file(wpath) != weights_meta["sha256"]:
        raise ArtifactError(f"{wpath}: sha256 differs from the manifest (corrupted or replaced weights)")
    if sha256_file(vpath) != vocab_meta["sha256"]:
        raise ArtifactError(f"{vpath}: sha256 differs from the manifest (vocab does not belong to this model)")
    try:
        vocab = TemplateVocab.load(vpath)
    except LogadError as e:
        raise ArtifactError(f"{vpath}: {e}") from None
    if len(vocab) != cfg.vocab_size:
        raise ArtifactError(f"vocab has {len(vocab)} templates but the model was built for {cfg.vocab_size}")
    try:
        state = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{wpath}: unreadable safetensors file ({e})") from None
    model = NextTokenTransformer(cfg)
    state["head.weight"] = state.get("tok_emb.weight", torch.empty(0))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ArtifactError(f"{wpath}: weights do not fit the manifest's model config ({' '.join(first[:2])})") from None
    model.to(device).eval()
    return Bundle(p, model, vocab, rule, manifest)
