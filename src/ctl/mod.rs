//! The control protocol ([`proto`]) and `rtpmidid ctl`, its client ([`client`]). The server
//! side, transport only, is the `control` module.
pub mod client;
pub mod proto;
