use super::*;

fn failed(attempt: u64, epoch: u64, error: &str) -> SpoolEntry {
    SpoolEntry {
        attempt: AttemptRef { attempt, epoch },
        outcome: SpooledOutcome::Failed {
            error: error.into(),
        },
    }
}

#[test]
fn entries_survive_reopening_until_removed() {
    let data = tempfile::tempdir().unwrap();
    let spool = Spool::open(data.path()).unwrap();
    let a = failed(7, 2, "out of memory");
    let b = failed(3, 1, "model missing");
    spool.write(&a).unwrap();
    spool.write(&b).unwrap();

    let reopened = Spool::open(data.path()).unwrap();
    assert_eq!(reopened.load_all().unwrap(), vec![b.clone(), a.clone()]);

    reopened.remove(b.attempt).unwrap();
    // An Ack may repeat: removing again is not an error.
    reopened.remove(b.attempt).unwrap();
    assert_eq!(reopened.load_all().unwrap(), vec![a]);
}

#[test]
fn a_half_written_file_of_a_crash_is_dropped_on_open() {
    let data = tempfile::tempdir().unwrap();
    let spool = Spool::open(data.path()).unwrap();
    let temp = spool.dir().join(format!(
        "{}.tmp",
        entry_name(AttemptRef {
            attempt: 1,
            epoch: 1
        })
    ));
    std::fs::write(&temp, b"\x81\xa7att").unwrap();
    let spool = Spool::open(data.path()).unwrap();
    assert!(!temp.exists());
    assert!(spool.load_all().unwrap().is_empty());
}

#[test]
fn corrupt_entries_are_moved_aside_with_their_reason() {
    let data = tempfile::tempdir().unwrap();
    let spool = Spool::open(data.path()).unwrap();
    let good = failed(1, 1, "e");
    spool.write(&good).unwrap();
    let garbage = entry_name(AttemptRef {
        attempt: 2,
        epoch: 1,
    });
    std::fs::write(spool.dir().join(&garbage), b"not msgpack at all").unwrap();
    // A whole entry under another attempt's name is refused as well.
    let misnamed = entry_name(AttemptRef {
        attempt: 9,
        epoch: 9,
    });
    std::fs::copy(
        spool.dir().join(entry_name(good.attempt)),
        spool.dir().join(&misnamed),
    )
    .unwrap();

    assert_eq!(spool.load_all().unwrap(), vec![good]);
    for name in [&garbage, &misnamed] {
        assert!(
            !spool.dir().join(name).exists(),
            "{name} still in the spool"
        );
        let corrupt = spool.dir().join("corrupt");
        assert!(corrupt.join(name).exists(), "{name} not kept in corrupt/");
        let reason = std::fs::read_to_string(corrupt.join(format!("{name}.reason"))).unwrap();
        assert!(!reason.trim().is_empty());
    }
    let reason = std::fs::read_to_string(
        spool
            .dir()
            .join("corrupt")
            .join(format!("{misnamed}.reason")),
    )
    .unwrap();
    assert!(reason.contains("attempt 1 epoch 1"), "{reason}");
}

#[test]
fn messages_carry_the_spooled_outcome() {
    let entry = failed(5, 3, "boom");
    assert_eq!(
        entry.to_message(),
        AgentMessage::AttemptFailed {
            attempt: AttemptRef {
                attempt: 5,
                epoch: 3
            },
            error: "boom".into()
        }
    );
}
