//! The control protocol ([`proto`]) and `rtpmidid ctl`, its client ([`client`]) with its live
//! view ([`top`]). The server side, transport only, is the `control` module.
pub mod client;
pub mod proto;
pub mod top;
