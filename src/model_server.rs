//! The reference model server (`clickpipe model-server`).
