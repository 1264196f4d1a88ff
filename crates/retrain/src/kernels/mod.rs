//! CPU kernels for the frozen, inference-only part of a model, where Burn's general kernels
//! leave speed on the table. Each one is checked against Burn's own operation in the tests.

pub mod winograd;
