//! Empty: the models live in `tests/`, compiled only with `--cfg posa_loom`.
