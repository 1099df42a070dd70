//! DeepSpeed compatibility (filled in below).
