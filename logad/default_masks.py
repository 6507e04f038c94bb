"""Default masking for format files that give no [[mask]] rules.

A user's format file usually knows the header layout of its log and nothing about which parts of
a message vary; these rules mask what varies in almost every log: ids, addresses, paths, numbers.
They are generic on purpose (no system-specific rule) and every regex is linear on hostile input:
no nested quantifiers over overlapping classes, context checks as fixed-width lookarounds.

This module imports only logad.masking, so logad.formats can import it.
"""

from __future__ import annotations

from logad.masking import MaskRule

_HEX4 = r"[0-9a-fA-F]{4}"
_UUID = r"[0-9a-fA-F]{8}-" + _HEX4 + "-" + _HEX4 + "-" + _HEX4 + r"-[0-9a-fA-F]{12}"
# Characters that end a path (Loghub-2.0's path delimiters: a path is "/x/y" between them).
_PATH_CH = r"""[^\s/,!;:=|"'\[\](){}]"""
_PATH_START = r"""(?<![^\s,!;:=|"'\[\](){}])"""  # start of text or after a delimiter

UUID = MaskRule("uuid", r"(?<![\w-])" + _UUID + r"(?![\w-])", "<UUID>", needs="-")
# IPv4 with an optional leading "/" (HDFS writes "/10.250.19.102:54106"); the port stays a <NUM>
# because Loghub-2.0 templates keep "<*>:<*>".
IP = MaskRule("ip", r"(?<![\w.])/?\d{1,3}(?:\.\d{1,3}){3}(?!\.?\d)(?!\w)", "<IP>", needs=".")
PATH = MaskRule("path", _PATH_START + r"(?:/" + _PATH_CH + r"+)+/?", "<PATH>", needs="/")
HEX = MaskRule("hex", r"(?<![\w-])(?:0[xX][0-9a-fA-F]+|[0-9a-f]{16,})(?![\w-])", "<HEX>")
# Host names: 3+ lowercase dot-separated labels, the first with a digit ("cp-1.slowvm1.tcloud-pg0...");
# the digit keeps Python module paths ("nova.compute.manager") out.
HOST = MaskRule("host", r"(?<![\w.-])(?=[a-z-]*\d)[a-z0-9-]+(?:\.[a-z0-9-]+){2,}(?![\w.-])", "<HOST>", needs=".")
# Numbers, signed or decimal, with an optional unit ("64172MB", "15GB", "20ms"); "-" and ":" split
# dates and times into numbers, as Loghub-2.0 does ("<*>-<*>-<*> <*>:<*>:<*>").
NUM = MaskRule("num", r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[KMGT]i?B|ms|s)?(?![\w])", "<NUM>", needs="0123456789")

DEFAULT_MASKS: tuple[MaskRule, ...] = (UUID, IP, PATH, HEX, HOST, NUM)
# Drain3 similarity threshold for format files that set none: Drain3's own default. A loose
# threshold is right here because TemplateVocab.fit splits clusters on constant words afterwards
# (logad.template_split); a strict one splits variables that these generic masks leave unmasked.
DEFAULT_SIM_TH = 0.4
