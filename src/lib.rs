//! clickpipe's binary-side library: configuration loading, the reference model server, the load
//! generator and the wiring that starts the actor pipeline.

pub mod loadgen;
pub mod model_server;
