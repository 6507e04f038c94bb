"""Offline pipeline: prepare datasets, pretrain, fine-tune, calibrate, evaluate (thin; calls logad/)."""
