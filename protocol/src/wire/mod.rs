//! Wire formats: a checked view or `Repr` with `parse`/`emit` per format, byte vectors beside.

pub mod applemidi;
pub mod midi_list;
pub mod rtp;
