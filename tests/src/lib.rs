//! Cross-process integration tests (see tests/).
