//! Wire formats: a checked view or `Repr` with `parse`/`emit` per format, byte vectors beside.
pub mod midi_list;
