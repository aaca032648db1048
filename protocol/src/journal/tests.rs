//! Byte vectors, malformed input and round trips for the recovery journal.
use super::wire::*;
use super::*;
use proptest::prelude::*;

/// Parses a journal and returns it, failing the test on error.
fn parse(bytes: &[u8]) -> Journal<'_> {
    match Journal::parse(bytes) {
        Ok(j) => j,
        Err(e) => panic!("{e:?} parsing {bytes:02X?}"),
    }
}

/// Every strict prefix of a valid journal is rejected (never a panic).
fn all_prefixes_rejected(bytes: &[u8]) {
    for n in 0..bytes.len() {
        assert!(
            Journal::parse(&bytes[..n]).is_err(),
            "prefix of {n} octets accepted: {:02X?}",
            &bytes[..n]
        );
    }
}

// A journal as macOS sends it on the packet after a NoteOn (written by hand from the RFC 6295
// layouts, as the macOS sender is described to use them: one channel journal, chapter N only).
// Packet 0x1234 carried 90 3C 64 (channel 1, middle C, velocity 100); this is packet 0x1235's.
const MACOS_AFTER_NOTE_ON: [u8; 10] = [
    0x20, 0x12, 0x34, // S=0 Y=0 A=1 H=0 TOTCHAN=0, checkpoint 0x1234
    0x00, 0x07, 0x08, // channel journal: S=0 CHAN=0 H=0 LENGTH=7, TOC: N
    0x81,
    0xF1, // chapter N: B=1 (no NoteOff in packet 0x1234) LEN=1, LOW=15 HIGH=1: no OFFBITS
    0x3C, 0xE4, // note log: S=0 NOTENUM=60, Y=1 VELOCITY=100
];
// The packet after the NoteOff (80 3C 40, packet 0x1235): note 60 is now in OFFBITS.
const MACOS_AFTER_NOTE_OFF: [u8; 9] = [
    0x20, 0x12, 0x34, // S=0 A=1, checkpoint still 0x1234 (no RS yet)
    0x00, 0x06, 0x08, // channel 0, LENGTH=6, TOC: N
    0x00, 0x77, // chapter N: B=0 (the NoteOff was in packet 0x1235) LEN=0, LOW=7 HIGH=7
    0x08, // OFFBITS for notes 56-63: note 60 is bit 4 from the top
];

#[test]
fn macos_note_on_then_off() {
    let j = parse(&MACOS_AFTER_NOTE_ON);
    assert_eq!(j.len, 10);
    assert!(!j.header.single && j.header.channels && !j.header.system);
    assert_eq!(j.header.checkpoint, 0x1234);
    let cj: Vec<_> = j.channels().collect();
    assert_eq!(cj.len(), 1);
    let n = cj[0].n.unwrap();
    let logs: Vec<_> = n.logs().collect();
    assert_eq!(logs.len(), 1);
    assert_eq!(
        (logs[0].number, logs[0].value, logs[0].flag),
        (60, 100, true)
    );
    assert_eq!(n.offbit_notes().count(), 0);

    let j = parse(&MACOS_AFTER_NOTE_OFF);
    let n = j.channels().next().unwrap().n.unwrap();
    assert_eq!(n.logs().count(), 0);
    assert_eq!(n.offbit_notes().collect::<Vec<_>>(), [60]);
    assert!(n.offbit(60) && !n.offbit(61));

    // A receiver that lost the NoteOn plays it; one that lost the NoteOff releases it.
    let mut rx = JournalReceiver::new();
    let mut got = Vec::new();
    rx.recover(0x1235, &MACOS_AFTER_NOTE_ON, 1, &mut |m: &[u8]| {
        got.push(m.to_vec())
    })
    .unwrap();
    assert_eq!(got, [vec![0x90, 60, 100]]);
    got.clear();
    rx.recover(0x1236, &MACOS_AFTER_NOTE_OFF, 1, &mut |m: &[u8]| {
        got.push(m.to_vec())
    })
    .unwrap();
    assert_eq!(got, [vec![0x80, 60, 64]]);
    assert_eq!(rx.repairs(), 2);
    // Nothing lost: checked only, nothing sent.
    rx.recover(0x1237, &MACOS_AFTER_NOTE_OFF, 0, &mut |_: &[u8]| {
        panic!("sent")
    })
    .unwrap();
    all_prefixes_rejected(&MACOS_AFTER_NOTE_ON);
    all_prefixes_rejected(&MACOS_AFTER_NOTE_OFF);
}

/// One channel journal holding every channel chapter, written by hand from Appendix A.
const ALL_CHANNEL_CHAPTERS: &[u8] = &[
    0xA0, 0x00, 0x05, // S=1 A=1 TOTCHAN=0, checkpoint 5
    0x88, 0x00, 0x00, // S=1 CHAN=1 H=0 LENGTH (patched below), TOC: all eight chapters
    // P: program 10, B=1 bank 1/2, X=0
    0x8A, 0x81,
    0x02, // C: S=1 LEN=1 (two logs): ctrl 7 value 100, ctrl 64 toggle tool (A=1 T=0) 3
    0x81, 0x87, 0x64, 0xC0, 0x83,
    // M: S=1 P=0 E=0 U=1 W=0 Z=0 LENGTH=10, log RPN 0 (pitch bend range) J K = 2, 0;
    // then a log for RPN 0x3FFF (null) without fields. E=0: no transaction in progress, the
    // receiver ends with the null parameter selected.
    0x90, 0x0A, 0x80, 0x00, 0xC0, 0x02, 0x00, 0xFF, 0x7F, 0x00,
    // W: S=1 FIRST=0x00, R=0 SECOND=0x40 (centre)
    0x80, 0x40,
    // N: B=1 LEN=1 LOW=8 HIGH=8; log note 64 vel 90 (Y=1); OFFBITS notes 64-71: 65 off
    0x81, 0x88, 0xC0, 0xDA, 0x40, // E: S=1 LEN=0: note 65 NoteOff velocity 20 (V=1)
    0x80, 0xC1, 0x94, // T: S=1 pressure 33
    0xA1, // A: S=1 LEN=0: note 64 pressure 50, X=0
    0x80, 0xC0, 0x32,
];

fn all_channel_chapters() -> Vec<u8> {
    let mut v = ALL_CHANNEL_CHAPTERS.to_vec();
    // M's first octet: 0x90 is S=1 U=1; its LENGTH octet is 0x09... patch the TOC and LENGTH.
    v[5] = 0xFF;
    let len = v.len() - 3;
    v[3] |= (len >> 8) as u8;
    v[4] = len as u8;
    v
}

#[test]
fn every_channel_chapter_by_hand() {
    let bytes = all_channel_chapters();
    let j = parse(&bytes);
    assert_eq!(j.len, bytes.len());
    let cj = j.channels().next().unwrap();
    assert_eq!(cj.channel, 1);
    assert!(cj.single && !cj.enhanced);
    let p = cj.p.unwrap();
    assert_eq!(
        (p.program, p.bank_valid, p.bank_msb, p.bank_lsb),
        (10, true, 1, 2)
    );
    let c: Vec<_> = cj.c.unwrap().logs().collect();
    assert_eq!((c[0].number, c[0].flag, c[0].value), (7, false, 100));
    assert_eq!((c[1].number, c[1].flag, c[1].value), (64, true, 0x03));
    let m: Vec<_> = cj.m.unwrap().logs().collect();
    assert_eq!(m.len(), 2);
    assert_eq!(
        (m[0].nrpn, m[0].number, m[0].entry_msb, m[0].entry_lsb),
        (false, 0, Some(2), Some(0))
    );
    assert_eq!((m[1].number, m[1].entry_msb), (0x3FFF, None));
    let w = cj.w.unwrap();
    assert_eq!((w.first, w.second), (0, 0x40));
    let n = cj.n.unwrap();
    let logs: Vec<_> = n.logs().collect();
    assert_eq!((logs[0].number, logs[0].value), (64, 90));
    assert_eq!(n.offbit_notes().collect::<Vec<_>>(), [65]);
    let e: Vec<_> = cj.e.unwrap().logs().collect();
    assert_eq!((e[0].number, e[0].flag, e[0].value), (65, true, 20));
    assert_eq!(cj.t.unwrap().pressure, 33);
    let a: Vec<_> = cj.a.unwrap().logs().collect();
    assert_eq!((a[0].number, a[0].value), (64, 50));
    all_prefixes_rejected(&bytes);

    // Recovery from an empty state applies every chapter.
    let mut rx = JournalReceiver::new();
    let mut got = Vec::new();
    rx.recover(6, &bytes, 3, &mut |m: &[u8]| got.push(m.to_vec()))
        .unwrap();
    let want: Vec<Vec<u8>> = vec![
        vec![0xB1, 0, 1],
        vec![0xB1, 32, 2],
        vec![0xC1, 10],
        vec![0xB1, 7, 100],
        vec![0xB1, 101, 0],
        vec![0xB1, 100, 0],
        vec![0xB1, 6, 2],
        vec![0xB1, 38, 0],
        vec![0xB1, 101, 0x7F],
        vec![0xB1, 100, 0x7F],
        vec![0xE1, 0, 0x40],
        vec![0x91, 64, 90],
        vec![0xD1, 33],
        vec![0xA1, 64, 50],
    ];
    assert_eq!(got, want);
    // Same journal again: state matches, nothing to send.
    rx.recover(7, &bytes, 3, &mut |m: &[u8]| panic!("resent {m:02X?}"))
        .unwrap();
    // Single-packet loss with everything S=1: nothing applies.
    let mut fresh = JournalReceiver::new();
    fresh
        .recover(6, &bytes, 1, &mut |m: &[u8]| panic!("sent {m:02X?}"))
        .unwrap();
}

/// A system journal with chapters D, V, Q, F and X, by hand from Appendix B.
fn all_system_chapters() -> Vec<u8> {
    let mut v = vec![
        0x40, 0x00, 0x09, // S=0 Y=1, checkpoint 9
        0x7C, 0x00, // S=0 D V Q F X, LENGTH patched
        // D: S=0 B G H J Y: reset count 1 (S=0), tune 2, song select 5, F4 field, F9 field
        0x7A, 0x01, 0x82, 0x85, 0xC0, 0x03, 0x07, 0xC2, 0x09, // V: S=1 count 3
        0x83, // Q: S=1 N=1 C=1 TOP=0, CLOCK=96 (4 beats)
        0xD0, 0x00, 0x60, // F: S=1 C=1 Q=1 POINT=7, COMPLETE nibbles 0..7
        0xD7, 0x01, 0x23, 0x45, 0x67,
        // X: one log, S=0 D=1 STA=3 (finished), data 7E 7F 09 01 (top bit set on the last)
        0x0B, 0x7E, 0x7F, 0x09, 0x81,
    ];
    let len = v.len() - 3;
    v[3] |= (len >> 8) as u8;
    v[4] = len as u8;
    v
}

#[test]
fn every_system_chapter_by_hand() {
    let bytes = all_system_chapters();
    let j = parse(&bytes);
    let sys = j.system.unwrap();
    assert!(!sys.single);
    let d = sys.d.unwrap();
    assert_eq!(d.reset, Some((false, 1)));
    assert_eq!(d.tune_request, Some((true, 2)));
    assert_eq!(d.song_select, Some((true, 5)));
    assert_eq!(d.f4.unwrap().count, Some(7));
    assert_eq!(d.f9.unwrap().count, Some(9));
    assert!(d.f5.is_none() && d.fd.is_none());
    assert_eq!(sys.v.unwrap().count, 3);
    let q = sys.q.unwrap();
    assert!(q.running && q.clock == Some(96) && q.timetools.is_none());
    let f = sys.f.unwrap();
    assert!(f.quarter && f.complete == Some(0x0123_4567) && f.point == 7);
    let x = sys.x.unwrap();
    let logs: Vec<_> = x.logs().collect();
    assert_eq!(logs.len(), 1);
    assert!(logs[0].complete() && !logs[0].single);
    assert_eq!(
        logs[0].data().unwrap().collect::<Vec<_>>(),
        [0x7E, 0x7F, 0x09, 0x01]
    );
    all_prefixes_rejected(&bytes);

    let mut rx = JournalReceiver::new();
    let mut got = Vec::new();
    rx.recover(10, &bytes, 2, &mut |m: &[u8]| got.push(m.to_vec()))
        .unwrap();
    assert_eq!(
        got,
        [
            vec![0xFF],
            vec![0xF6],
            vec![0xF4],
            vec![0xF9],
            vec![0xF3, 5],
            vec![0xF2, 16, 0],
            vec![0xFB],
            vec![0xF0, 0x7E, 0x7F, 0x09, 0x01, 0xF7],
        ]
    );
    // Single loss: only the S=0 parts (reset count, SysEx) apply, and both match already
    // except the SysEx, which is replayed.
    let mut got = Vec::new();
    let mut rx = JournalReceiver::new();
    rx.recover(10, &bytes, 1, &mut |m: &[u8]| got.push(m.to_vec()))
        .unwrap();
    assert_eq!(got, [vec![0xFF], vec![0xF0, 0x7E, 0x7F, 0x09, 0x01, 0xF7]]);
}

#[test]
fn fixed_chapters_emit_as_parsed() {
    let mut buf = [0u8; 16];
    let mut w = Writer::new(&mut buf);
    let p = ChapterP {
        single: false,
        program: 5,
        bank_valid: true,
        bank_msb: 3,
        x: false,
        bank_lsb: 4,
    };
    p.emit(&mut w).unwrap();
    assert_eq!(w.pos(), 3);
    assert_eq!(&buf[..3], [0x05, 0x83, 0x04]);
    assert_eq!(ChapterP::parse(&buf).unwrap(), p);

    let mut w = Writer::new(&mut buf);
    let q = ChapterQ {
        single: true,
        running: false,
        d: false,
        clock: Some(0x5_1234),
        timetools: Some(0x00AB_CDEF),
    };
    q.emit(&mut w).unwrap();
    assert_eq!(&buf[..6], [0x9D, 0x12, 0x34, 0xAB, 0xCD, 0xEF]);
    assert_eq!(ChapterQ::parse(&buf).unwrap(), (q, 6));

    let mut w = Writer::new(&mut buf);
    let f = ChapterF {
        single: true,
        complete: Some(0x0102_0304),
        partial: None,
        quarter: false,
        reverse: true,
        point: 3,
    };
    f.emit(&mut w).unwrap();
    assert_eq!(&buf[..5], [0xCB, 1, 2, 3, 4]);
    assert_eq!(ChapterF::parse(&buf).unwrap(), (f, 5));

    let mut small = [0u8; 2];
    assert_eq!(
        p.emit(&mut Writer::new(&mut small)),
        Err(JournalError::NoRoom)
    );
}

#[test]
fn malformed_journals_rejected() {
    // Channel journal LENGTH shorter than its header.
    assert_eq!(
        Journal::parse(&[0x20, 0, 0, 0x00, 0x02, 0x00]).unwrap_err(),
        JournalError::BadLength
    );
    // LENGTH longer than the chapters it lists.
    assert_eq!(
        Journal::parse(&[0x20, 0, 0, 0x00, 0x05, 0x02, 0x80, 0x00]).unwrap_err(),
        JournalError::BadLength
    );
    // Chapter N with LOW > HIGH other than 15/0 and 15/1.
    assert_eq!(
        Journal::parse(&[0x20, 0, 0, 0x00, 0x05, 0x08, 0x00, 0x21]).unwrap_err(),
        JournalError::BadOffbits
    );
    // System journal LENGTH below its header.
    assert_eq!(
        Journal::parse(&[0x40, 0, 0, 0x00, 0x01]).unwrap_err(),
        JournalError::BadLength
    );
    // System journal with no chapter X but octets left over.
    assert_eq!(
        Journal::parse(&[0x40, 0, 0, 0x20, 0x04, 0x81, 0x00]).unwrap_err(),
        JournalError::BadLength
    );
    // Chapter M whose log overruns its LENGTH.
    assert_eq!(
        Journal::parse(&[0x20, 0, 0, 0x00, 0x08, 0x20, 0x80, 0x05, 0x00, 0x00, 0x80]).unwrap_err(),
        JournalError::BadLength
    );
    // TOTCHAN promises two channel journals, one is there.
    let mut two = MACOS_AFTER_NOTE_ON.to_vec();
    two[0] |= 1;
    assert_eq!(Journal::parse(&two).unwrap_err(), JournalError::Truncated);
    // A malformed journal leaves the receiver untouched.
    let mut rx = JournalReceiver::new();
    assert!(rx.recover(1, &two, 3, &mut |_: &[u8]| panic!()).is_err());
    assert_eq!(rx.repairs(), 0);
}

#[test]
fn odd_but_legal_layouts_accepted() {
    // An empty journal (no system, no channel journals) and trailing octets after it.
    let j = parse(&[0x80, 0x00, 0x01, 0xAA]);
    assert_eq!(j.len, 3);
    assert_eq!(j.channels().count(), 0);
    // A channel journal with no chapters at all.
    let j = parse(&[0x20, 0x00, 0x01, 0x80, 0x03, 0x00]);
    assert_eq!(j.channels().next().unwrap().n.map(|_| ()), None);
    // Chapter N with 128 note logs (LEN=127, LOW=15, HIGH=0).
    let mut v = vec![0x20, 0, 0, 0, 0, 0x08, 0x7F, 0xF0];
    for n in 0..128u8 {
        v.extend([n, 0x80 | 1]);
    }
    let len = v.len() - 3;
    v[3] = (len >> 8) as u8;
    v[4] = len as u8;
    assert_eq!(
        parse(&v)
            .channels()
            .next()
            .unwrap()
            .n
            .unwrap()
            .logs()
            .count(),
        128
    );
    // Chapter M with field removal (Z and U): logs without the PNUM-MSB octet.
    let j = parse(&[0x20, 0, 0, 0x00, 0x08, 0x20, 0x14, 0x05, 0x05, 0x80, 0x0C]);
    let m: Vec<_> = j.channels().next().unwrap().m.unwrap().logs().collect();
    assert_eq!(
        (m[0].nrpn, m[0].number, m[0].entry_msb),
        (false, 5, Some(12))
    );
}

fn run(tx: &mut JournalSender, seq: u32, msgs: &[&[u8]]) {
    for m in msgs {
        tx.record(seq, m);
    }
}

#[test]
fn sender_journals_since_checkpoint_and_trims() {
    let mut tx = JournalSender::new();
    let mut buf = [0u8; 1400];
    assert_eq!(tx.emit(1, &mut buf), 0);
    run(&mut tx, 1, &[&[0x90, 60, 100]]);
    // The packet carrying the note itself has no journal (nothing before it).
    assert_eq!(tx.emit(1, &mut buf), 0);
    let n = tx.emit(2, &mut buf);
    let j = parse(&buf[..n]);
    assert_eq!(j.header.checkpoint, 1);
    assert!(!j.header.single, "the note was in packet 1 = 2 - 1");
    run(&mut tx, 2, &[&[0x80, 60, 64]]);
    let n = tx.emit(3, &mut buf);
    let j = parse(&buf[..n]);
    let ch = j.channels().next().unwrap().n.unwrap();
    assert_eq!(ch.offbit_notes().collect::<Vec<_>>(), [60]);
    assert_eq!(ch.logs().count(), 0);
    // Later packet: S bits are 1 (nothing about packet 4's predecessor... packet 4).
    let n = tx.emit(5, &mut buf);
    assert!(parse(&buf[..n]).header.single);
    tx.confirm(2);
    assert!(!tx.has_pending());
    assert_eq!(tx.emit(6, &mut buf), 0);
    // A confirmation from the future is ignored.
    let mut tx2 = JournalSender::new();
    run(&mut tx2, 10, &[&[0x90, 1, 1]]);
    tx2.confirm(5000);
    assert!(tx2.has_pending());
}

#[test]
fn sender_matches_macos_layout_for_note_on() {
    let mut tx = JournalSender::new();
    let mut buf = [0u8; 64];
    run(&mut tx, 0x1234, &[&[0x90, 60, 100]]);
    let n = tx.emit(0x1235, &mut buf);
    assert_eq!(&buf[..n], &MACOS_AFTER_NOTE_ON);
    run(&mut tx, 0x1235, &[&[0x80, 60, 64]]);
    let n = tx.emit(0x1236, &mut buf);
    assert_eq!(&buf[..n], &MACOS_AFTER_NOTE_OFF);
}

#[test]
fn journal_fits_the_room_given_note_offs_last_to_go() {
    let mut tx = JournalSender::new();
    for n in 0..100u8 {
        tx.record(1, &[0x90, n, 100]);
        tx.record(1, &[0xB0, n % 90 + 1, n]);
        tx.record(1, &[0xA0, n, n]);
    }
    for n in 0..50u8 {
        tx.record(2, &[0x80, n, 0]);
    }
    tx.record(2, &[0xF0, 0x7D, 1, 2, 3, 0xF7]);
    let mut big = [0u8; 1400];
    let full = tx.emit(3, &mut big);
    assert!(full > 300);
    for room in [3usize, 5, 20, 40, 150, 300, 600, full - 1] {
        let mut buf = vec![0u8; room];
        let n = tx.emit(3, &mut buf);
        assert!(n <= room);
        if n == 0 {
            continue;
        }
        let j = parse(&buf[..n]);
        // Whatever else was dropped, the note-offs are there.
        let cj = j.channels().next().unwrap();
        let offs: Vec<_> = cj.n.unwrap().offbit_notes().collect();
        assert_eq!(offs, (0..50).collect::<Vec<u8>>(), "room {room}");
    }
    // Offbits only: journal header 3, channel header 3, chapter N header 2, 7 OFFBITS octets.
    let mut buf = [0u8; 15];
    assert_eq!(tx.emit(3, &mut buf), 15);
    assert_eq!(tx.emit(3, &mut buf[..14]), 0);
}

#[test]
fn single_loss_uses_only_s0_parts() {
    let mut tx = JournalSender::new();
    let mut rx = JournalReceiver::new();
    let mut buf = [0u8; 256];
    // Packet 1 arrives: controller 7 = 10.
    run(&mut tx, 1, &[&[0xB0, 7, 10]]);
    rx.observe(&[0xB0, 7, 10]);
    // Packet 2 is lost: note on 62.
    run(&mut tx, 2, &[&[0x90, 62, 80]]);
    // Packet 3 arrives with the journal.
    let n = tx.emit(3, &mut buf);
    let j = parse(&buf[..n]);
    let cj = j.channels().next().unwrap();
    assert!(cj.c.unwrap().single, "controller 7 was in packet 1: S=1");
    // B is the S bit of OFFBITS: no NoteOff in packet 2.
    assert!(cj.n.unwrap().b && !cj.single);
    let mut got = Vec::new();
    rx.recover(3, &buf[..n], 1, &mut |m: &[u8]| got.push(m.to_vec()))
        .unwrap();
    assert_eq!(got, [vec![0x90, 62, 80]]);
    assert!(rx.state().same_music(tx.state()));
}

#[test]
fn every_kind_of_state_round_trips() {
    let mut tx = JournalSender::new();
    let msgs: &[&[u8]] = &[
        &[0xB2, 0, 3],
        &[0xB2, 32, 1],
        &[0xC2, 42],
        &[0xB2, 7, 99],
        &[0xB2, 101, 0],
        &[0xB2, 100, 1],
        &[0xB2, 6, 64],
        &[0xB2, 38, 0],
        &[0xB2, 99, 1],
        &[0xB2, 98, 2],
        &[0xB2, 6, 5],
        &[0xE2, 0x10, 0x50],
        &[0xD2, 70],
        &[0x92, 40, 33],
        &[0x92, 41, 34],
        &[0xA2, 40, 9],
        &[0x82, 41, 12],
        &[0xF3, 3],
        &[0xF2, 10, 0],
        &[0xFA],
        &[0xF8],
        &[0xFC],
        &[0xF1, 0x21],
        &[0xF0, 0x7D, 0x01, 0xF0],
        &[0xF7, 0x02, 0xF7],
    ];
    run(&mut tx, 1, msgs);
    let mut buf = [0u8; 512];
    let n = tx.emit(2, &mut buf);
    let mut rx = JournalReceiver::new();
    let mut got = Vec::new();
    assert_eq!(
        rx.recover(2, &buf[..n], 1, &mut |m: &[u8]| got.push(m.to_vec())),
        Ok(n)
    );
    assert!(rx.state().same_music(tx.state()), "{got:02X?}");
    assert!(
        !got.contains(&vec![0x82, 41, 12]),
        "note 41 was never on here"
    );
    assert!(got.contains(&vec![0xF0, 0x7D, 0x01, 0x02, 0xF7]));
    // A second identical journal sends nothing but the journalled SysEx (chapter X is a list
    // of commands, not a state).
    rx.recover(3, &buf[..n], 2, &mut |m: &[u8]| assert_eq!(m[0], 0xF0))
        .unwrap();
}

fn arb_message() -> impl Strategy<Value = Vec<u8>> {
    let ch = 0..4u8;
    prop_oneof![
        (ch.clone(), 30..50u8, 0..128u8).prop_map(|(c, n, v)| vec![0x90 | c, n, v]),
        (ch.clone(), 30..50u8, 0..128u8).prop_map(|(c, n, v)| vec![0x80 | c, n, v]),
        (ch.clone(), 30..50u8, 0..128u8).prop_map(|(c, n, v)| vec![0xA0 | c, n, v]),
        (ch.clone(), 0..128u8, 0..128u8).prop_map(|(c, n, v)| vec![0xB0 | c, n, v]),
        (ch.clone(), 0..128u8).prop_map(|(c, p)| vec![0xC0 | c, p]),
        (ch.clone(), 0..128u8).prop_map(|(c, p)| vec![0xD0 | c, p]),
        (ch.clone(), 0..128u8, 0..128u8).prop_map(|(c, a, b)| vec![0xE0 | c, a, b]),
        (ch, any::<bool>(), 0..4u8, 0..128u8).prop_map(|(c, nrpn, p, v)| {
            let (m, l) = if nrpn { (99, 98) } else { (101, 100) };
            vec![0xB0 | c, m, 0, 0xB0 | c, l, p, 0xB0 | c, 6, v]
        }),
        prop::sample::select(vec![0xF8u8, 0xFA, 0xFB, 0xFC]).prop_map(|b| vec![b]),
        (0..128u8).prop_map(|s| vec![0xF3, s]),
        (0..20u8).prop_map(|d| vec![0xF0, 0x7D, d, 0xF7]),
    ]
}

fn split(msg: &[u8]) -> Vec<&[u8]> {
    if msg[0] == 0xF0 {
        return vec![msg];
    }
    msg.chunks(crate::midi::data_len(msg[0]).unwrap_or(0) + 1)
        .collect()
}

proptest! {
    /// Whatever was sent, a receiver that lost it all recovers the same music from one journal.
    #[test]
    fn journal_restores_everything(msgs in prop::collection::vec(arb_message(), 1..60)) {
        let mut tx = JournalSender::new();
        for (i, m) in msgs.iter().enumerate() {
            for part in split(m) {
                tx.record(i as u32, part);
            }
        }
        let mut buf = [0u8; 1400];
        // No journal at all when nothing changed state (a clock while stopped, say).
        let n = tx.emit(msgs.len() as u32, &mut buf);
        let mut rx = JournalReceiver::new();
        if n > 0 {
            rx.recover(msgs.len() as u32, &buf[..n], msgs.len() as u32, &mut |_: &[u8]| {})
                .unwrap();
        }
        prop_assert!(rx.state().same_music(tx.state()));
    }

    /// Arbitrary octets never panic the parser or the receiver.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), lost in 0..3u32) {
        let mut rx = JournalReceiver::new();
        let _ = rx.recover(7, &bytes, lost, &mut |_: &[u8]| {});
    }
}

/// What Wireshark's `rtpmidi` dissector should show for one of our journals: system journal
/// length, channel journal lengths, chapter C numbers and values, chapter N note logs,
/// chapter P programs, checkpoint; as `tshark -T fields` prints them.
fn wireshark_fields(journal: &[u8]) -> Vec<String> {
    let j = parse(journal);
    let mut rest = &journal[JOURNAL_HEADER_LEN..];
    let mut sys = String::new();
    if j.header.system {
        let (_, n) = SystemJournal::parse(rest).unwrap();
        sys = n.to_string();
        rest = &rest[n..];
    }
    let (mut lens, mut nums, mut vals, mut notes, mut progs) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in j.channels() {
        let (cj, n) = ChannelJournal::parse(rest).unwrap();
        rest = &rest[n..];
        lens.push(n.to_string());
        for l in cj.c.iter().flat_map(|c| c.logs()) {
            nums.push(l.number.to_string());
            vals.push(format!("0x{:02x}", l.value));
        }
        notes.extend(
            cj.n.iter()
                .flat_map(|n| n.logs())
                .map(|l| l.number.to_string()),
        );
        progs.extend(cj.p.map(|p| p.program.to_string()));
    }
    let checkpoint = j.header.checkpoint.to_string();
    [
        sys,
        lens.join(","),
        nums.join(","),
        vals.join(","),
        notes.join(","),
        progs.join(","),
        checkpoint,
    ]
    .to_vec()
}

/// Our journals through Wireshark's `rtpmidi` dissector (Debian `tshark`), when installed:
/// no malformed packet, and the fields it decodes are the ones we encoded. Set
/// `JOURNAL_DUMP=file` to keep the text2pcap input.
#[test]
fn wireshark_decodes_our_journals() {
    let script: &[&[&[u8]]] = &[
        &[&[0x90, 60, 100], &[0xB0, 7, 99]],
        &[&[0x80, 60, 12], &[0xB0, 0, 1], &[0xB0, 32, 2], &[0xC0, 5]],
        &[
            &[0xE1, 0x10, 0x50],
            &[0xD1, 70],
            &[0x91, 40, 33],
            &[0xA1, 40, 9],
        ],
        &[
            &[0xB1, 101, 0],
            &[0xB1, 100, 0],
            &[0xB1, 6, 2],
            &[0xB1, 38, 0],
        ],
        &[
            &[0xF3, 3],
            &[0xFA],
            &[0xF8],
            &[0xF8],
            &[0xFE],
            &[0xF6],
            &[0xF4],
            &[0xF9],
        ],
        &[&[0xF1, 0x00], &[0xF1, 0x11], &[0xF1, 0x22], &[0xF1, 0x33]],
        &[&[0xF1, 0x44], &[0xF1, 0x55], &[0xF1, 0x66], &[0xF1, 0x77]],
        &[&[0xF0, 0x7D, 0x01, 0x02, 0xF7], &[0xFC]],
        &[&[0x91, 40, 0]],
        &[],
    ];
    // The same without sequencer commands: tshark 4.0 reads chapter Q's S bit as its T bit
    // (mask 0x80 instead of 0x08) and then misreads what follows Q; those packets are only
    // checked for being well-formed.
    let no_q: Vec<Vec<&[u8]>> = script
        .iter()
        .map(|cmds| {
            cmds.iter()
                .copied()
                .filter(|c| !matches!(c[0], 0xF8 | 0xFA | 0xFC))
                .collect()
        })
        .collect();
    let runs: [Vec<&[&[u8]]>; 2] = [script.to_vec(), no_q.iter().map(|v| &v[..]).collect()];
    let mut text = String::new();
    let mut expected = Vec::new();
    let mut buf = [0u8; 1024];
    let mut frame = 0;
    for (r, script) in runs.iter().enumerate() {
        let mut tx = JournalSender::new();
        for (i, cmds) in script.iter().enumerate() {
            let seq = 700 + (r * 100 + i) as u32;
            for c in *cmds {
                tx.record(seq, c);
            }
            let n = tx.emit(seq, &mut buf);
            frame += 1;
            if r == 1 && n > 0 {
                expected.push((frame, wireshark_fields(&buf[..n])));
            }
            // RTP header, a command section with at most one command, then the journal.
            let mut pkt = vec![0x80, 0x61];
            pkt.extend((seq as u16).to_be_bytes());
            pkt.extend((i as u32 * 10).to_be_bytes());
            pkt.extend(0x1234_5678u32.to_be_bytes());
            let cmd: &[u8] = cmds.first().copied().unwrap_or(&[]);
            pkt.push(if n > 0 { 0x40 } else { 0 } | cmd.len() as u8);
            pkt.extend(cmd);
            pkt.extend(&buf[..n]);
            for (row, chunk) in pkt.chunks(16).enumerate() {
                text += &format!("{:06x}", row * 16);
                for b in chunk {
                    text += &format!(" {b:02x}");
                }
                text += "\n";
            }
            text += "\n";
        }
    }
    let dir = std::env::temp_dir().join(format!("rtpmidid-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let txt = std::env::var_os("JOURNAL_DUMP").map_or(dir.join("dump.txt"), Into::into);
    std::fs::write(&txt, &text).unwrap();
    let pcap = dir.join("journal.pcap");
    let converted = std::process::Command::new("text2pcap")
        .args(["-q", "-u", "5004,5005"])
        .arg(&txt)
        .arg(&pcap)
        .status();
    if !converted.is_ok_and(|s| s.success()) {
        // tests/run-all.sh installs tshark and asks for this check to be required.
        assert!(
            std::env::var_os("RTPMIDID_REQUIRE_TSHARK").is_none(),
            "text2pcap/tshark not installed, and RTPMIDID_REQUIRE_TSHARK is set"
        );
        eprintln!("text2pcap/tshark not installed: Wireshark check skipped");
        return;
    }
    let tshark = |extra: &[&str]| {
        let out = std::process::Command::new("tshark")
            .args(["-n", "-r"])
            .arg(&pcap)
            .args(["-o", "rtp.heuristic_rtp:FALSE", "-d", "udp.port==5005,rtp"])
            .args(["-d", "rtp.pt==97,rtpmidi"])
            .args(extra)
            .output()
            .expect("tshark runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        tshark(&["-Y", "_ws.malformed"]).trim(),
        "",
        "malformed packets"
    );
    let fields = tshark(&[
        "-T",
        "fields",
        "-e",
        "frame.number",
        "-e",
        "rtpmidi.cmd_sysjour_len",
        "-e",
        "rtpmidi.cmd_chanjour_len",
        "-e",
        "rtpmidi.cj_chapter_c_number",
        "-e",
        "rtpmidi.cj_chapter_c_value",
        "-e",
        "rtpmidi.cj_chapter_n_log_note",
        "-e",
        "rtpmidi.cj_chapter_p_program",
        "-e",
        "rtpmidi.check_Seq_num",
    ]);
    let decoded: Vec<Vec<&str>> = fields.lines().map(|l| l.split('\t').collect()).collect();
    assert!(!expected.is_empty());
    for (frame, want) in expected {
        let row = decoded
            .iter()
            .find(|r| r[0] == frame.to_string())
            .expect("frame decoded");
        assert_eq!(&row[1..], &want[..], "frame {frame}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn record_and_emit_in_either_order() {
    let packets: &[&[&[u8]]] = &[
        &[&[0xFA], &[0x90, 60, 100]],
        &[&[0xF8], &[0xB0, 121, 0], &[0xA0, 60, 5]],
        &[&[0xF8], &[0x80, 60, 0]],
    ];
    let mut a = JournalSender::new();
    let mut b = JournalSender::new();
    let (mut ja, mut jb) = ([0u8; 256], [0u8; 256]);
    for (i, cmds) in packets.iter().enumerate() {
        let seq = 40 + i as u32;
        for c in *cmds {
            a.record(seq, c);
        }
        let na = a.emit(seq, &mut ja);
        let nb = b.emit(seq, &mut jb);
        for c in *cmds {
            b.record(seq, c);
        }
        assert_eq!(&ja[..na], &jb[..nb], "packet {seq}");
    }
    // Packet 42's journal describes 40 and 41: the sequencer runs, note 60 is on, and the
    // poly pressure set after the controller reset.
    let n = a.emit(42, &mut ja);
    let j = parse(&ja[..n]);
    assert!(j.system.unwrap().q.unwrap().running);
    let cj = j.channels().next().unwrap();
    assert_eq!(
        cj.n.unwrap().logs().map(|l| l.number).collect::<Vec<_>>(),
        [60]
    );
    assert_eq!(
        cj.a.unwrap().logs().map(|l| l.value).collect::<Vec<_>>(),
        [5]
    );
}

#[test]
fn sysex_begun_in_a_lost_packet_is_completed() {
    let mut tx = JournalSender::new();
    let mut rx = JournalReceiver::new();
    let mut buf = [0u8; 256];
    // Packet 1 (lost) begins a SysEx; packet 2 ends it.
    tx.record(1, &[0xF0, 0x7D, 0x11, 0x22, 0xF0]);
    let n = tx.emit(2, &mut buf);
    tx.record(2, &[0xF7, 0x33, 0xF7]);
    let j = parse(&buf[..n]);
    let logs: Vec<_> = j.system.unwrap().x.unwrap().logs().collect();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].status, STA_UNFINISHED);
    let mut got = Vec::new();
    rx.recover(2, &buf[..n], 1, &mut |m: &[u8]| got.push(m.to_vec()))
        .unwrap();
    assert_eq!(got, [vec![0xF0, 0x7D, 0x11, 0x22, 0xF0]]);
    rx.observe(&[0xF7, 0x33, 0xF7]);
    assert_eq!(rx.state().last_sysex, [0xF0, 0x7D, 0x11, 0x22, 0x33, 0xF7]);
    assert!(rx.state().same_music(tx.state()));
}

#[test]
fn rs_confirmation_and_uncovered_losses() {
    let mut tx = JournalSender::new();
    let mut buf = [0u8; 64];
    for seq in 0x1_FFF0..0x2_0010u32 {
        tx.record(seq, &[0x90, (seq & 0x7F) as u8, 1]);
        tx.emit(seq, &mut buf);
    }
    // RS 0x0005 means extended 0x2_0005 here, across the 16-bit wrap.
    tx.confirm_rs(0x0005);
    assert_eq!(tx.checkpoint(), Some(0x2_0006));
    tx.confirm_rs(0xFFF8);
    assert_eq!(
        tx.checkpoint(),
        Some(0x2_0006),
        "an older RS does not move it back"
    );

    // A journal whose checkpoint is after the first lost packet covers the loss only in part.
    let mut rx = JournalReceiver::new();
    let n = tx.emit(0x2_0010, &mut buf);
    rx.recover(0x2_0010, &buf[..n], 3, &mut |_: &[u8]| {})
        .unwrap();
    assert_eq!(rx.uncovered(), 0);
    rx.recover(0x2_0010, &buf[..n], 20, &mut |_: &[u8]| {})
        .unwrap();
    assert_eq!(rx.uncovered(), 1);
}

/// Chapter X logs as (S bit, data octets), in journal order.
fn sysex_logs(journal: &[u8]) -> Vec<(bool, Vec<u8>)> {
    let j = parse(journal);
    let x = j.system.unwrap().x.unwrap();
    x.logs()
        .map(|l| (l.single, l.data().unwrap().collect()))
        .collect()
}

#[test]
fn sysex_logs_clear_s_only_after_the_packet_that_carried_them() {
    let mut tx = JournalSender::new();
    let mut buf = [0u8; 256];
    tx.record(1, &[0xF0, 0x01, 0xF7]);
    // A SysEx in two segments, packets 3 and 4.
    tx.record(3, &[0xF0, 0x02, 0xF0]);
    tx.record(4, &[0xF7, 0x03, 0xF7]);
    // The packet after the second segment: that log's S is clear, and so the chapter's,
    // which the first log's carries (B.5).
    let n = tx.emit(5, &mut buf);
    assert_eq!(
        sysex_logs(&buf[..n]),
        [(false, vec![0x01]), (false, vec![0x02, 0x03])]
    );
    tx.record(5, &[0xF0, 0x04, 0xF7]);
    let n = tx.emit(6, &mut buf);
    assert_eq!(
        sysex_logs(&buf[..n]),
        [
            (false, vec![0x01]),
            (true, vec![0x02, 0x03]),
            (false, vec![0x04])
        ]
    );
    // Confirmed up to packet 3: the split SysEx ended later and stays, the first goes.
    tx.confirm(3);
    let n = tx.emit(7, &mut buf);
    assert_eq!(
        sysex_logs(&buf[..n]),
        [(true, vec![0x02, 0x03]), (true, vec![0x04])]
    );
    assert!(parse(&buf[..n]).system.unwrap().x.unwrap().single);
    tx.confirm(6);
    assert_eq!(tx.emit(8, &mut buf), 0, "all confirmed: no journal");
}
