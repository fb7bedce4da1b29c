//! The load generator (`clickpipe loadgen`).
