//! End-to-end tests: writing through the sink, then verifying, tampering,
//! rotating, restarting, recovering and expiring.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ring::signature::Ed25519KeyPair;

use super::format::Bodies;
use super::record::tests::statement;
use super::writer::LogWriter;
use super::*;

const MAC_KEY: [u8; 32] = [42; 32];

struct Fixture {
    dir: tempfile::TempDir,
    keys: Arc<AuditKeys>,
}

impl Fixture {
    fn new() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let signing = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Self {
            dir: tempfile::tempdir().unwrap(),
            keys: Arc::new(AuditKeys::new(&MAC_KEY, signing)),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Files stay as written, to be edited; the compression tests turn
    /// it on.
    fn config(&self) -> AuditConfig {
        AuditConfig {
            dir: self.dir().into(),
            fsync_interval_ms: 0,
            compress: false,
            ..AuditConfig::default()
        }
    }

    /// Writes `n` records through a sink and shuts it down.
    async fn write(&self, config: &AuditConfig, n: u64) {
        let (handle, task) = AuditSink::start(config, self.keys.clone()).unwrap();
        for i in 0..n {
            handle.record(statement(i)).unwrap();
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        handle.shutdown().await.unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(handle.dropped(), 0);
    }

    fn verify(&self) -> Result<VerifyReport, VerifyError> {
        verify(self.dir(), Some(&MAC_KEY), self.keys.public_key())
    }

    fn verify_without_mac_key(&self) -> Result<VerifyReport, VerifyError> {
        verify(self.dir(), None, self.keys.public_key())
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    fn name(&self, index: usize) -> String {
        let files = self.files();
        files[index].file_name().unwrap().to_str().unwrap().into()
    }

    /// Edits the lines (without newlines) of the file at `index`.
    fn edit(&self, index: usize, edit: impl FnOnce(&mut Vec<String>)) {
        let path = &self.files()[index];
        let text = fs::read_to_string(path).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        edit(&mut lines);
        fs::write(path, lines.join("\n") + "\n").unwrap();
    }
}

fn at(file: &str, line: usize) -> Location {
    Location {
        file: file.into(),
        line,
    }
}

/// One file: header, records 1..=20 on lines 2..=21, seal on line 22.
async fn one_file() -> Fixture {
    let f = Fixture::new();
    f.write(&f.config(), 20).await;
    f
}

/// Several files of a few records each.
async fn rotated() -> Fixture {
    let f = Fixture::new();
    let config = AuditConfig {
        max_file_bytes: MIN_FILE_BYTES,
        ..f.config()
    };
    f.write(&config, 40).await;
    f
}

#[tokio::test]
async fn every_record_is_written_and_verifies() {
    let f = one_file().await;
    let report = f.verify().unwrap();
    assert_eq!(
        report,
        VerifyReport {
            files: 1,
            checked: vec![FileCheck {
                file: f.name(0),
                coverage: Coverage::Verified,
                anchor_seq: 0,
                last_seq: 20,
                recovered: false,
            }],
            records: 20,
            anchor_seq: 0,
            last_seq: 20,
            macs_checked: true,
            recovered: vec![],
            open: None,
            gaps: vec![],
            lost: 0,
            unclean: vec![],
        }
    );
    assert_eq!(report.status(), Status::Ok);
    let report = f.verify_without_mac_key().unwrap();
    assert_eq!((report.records, report.macs_checked), (20, false));
    assert_eq!(report.checked[0].coverage, Coverage::SealedOnly);
    assert_eq!(report.status(), Status::Ok);
    let text = fs::read_to_string(&f.files()[0]).unwrap();
    assert_eq!(text.lines().count(), 22);
    assert!(text.lines().nth(1).unwrap().contains("\"seq\":1,"));
}

#[tokio::test]
async fn a_changed_byte_is_found() {
    let f = one_file().await;
    f.edit(0, |lines| {
        lines[4] = lines[4].replacen("\"rows\":1,", "\"rows\":9,", 1)
    });
    let name = f.name(0);
    assert!(matches!(f.verify(), Err(VerifyError::MacMismatch { at: a }) if a == at(&name, 5)));
    assert!(matches!(
        f.verify_without_mac_key(),
        Err(VerifyError::HashMismatch { at: a }) if a == at(&name, 22)
    ));
}

#[tokio::test]
async fn a_deleted_line_is_found() {
    let f = one_file().await;
    f.edit(0, |lines| {
        lines.remove(4);
    });
    for result in [f.verify(), f.verify_without_mac_key()] {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, VerifyError::SeqGap { at: a, expected: 4, found: 5 } if *a == at(&f.name(0), 5)),
            "{err}"
        );
    }
}

#[tokio::test]
async fn swapped_lines_are_found() {
    let f = one_file().await;
    f.edit(0, |lines| lines.swap(4, 5));
    let err = f.verify().unwrap_err();
    assert!(
        matches!(&err, VerifyError::SeqGap { at: a, expected: 4, found: 5 } if *a == at(&f.name(0), 5)),
        "{err}"
    );
}

#[tokio::test]
async fn an_inserted_line_is_found() {
    let f = one_file().await;
    f.edit(0, |lines| {
        let copy = lines[2].clone();
        lines.insert(5, copy);
    });
    let err = f.verify().unwrap_err();
    assert!(
        matches!(&err, VerifyError::SeqGap { at: a, expected: 5, found: 2 } if *a == at(&f.name(0), 6)),
        "{err}"
    );
    // A forged record with the right seq fails its MAC.
    let f = one_file().await;
    f.edit(0, |lines| lines[4] = lines[4].replacen("alice", "bob", 1));
    let err = f.verify().unwrap_err();
    assert!(matches!(&err, VerifyError::MacMismatch { at: a } if *a == at(&f.name(0), 5)));
}

#[tokio::test]
async fn a_truncated_file_is_found() {
    let f = one_file().await;
    f.edit(0, |lines| {
        lines.pop();
    });
    let err = f.verify_without_mac_key().unwrap_err();
    assert!(
        matches!(&err, VerifyError::Truncated { at: a, newest: true } if *a == at(&f.name(0), 22)),
        "{err}"
    );
    // Cut into the last record, line 21.
    let path = &f.files()[0];
    let bytes = fs::read(path).unwrap();
    fs::write(path, &bytes[..bytes.len() - 30]).unwrap();
    let err = f.verify().unwrap_err();
    assert!(
        matches!(&err, VerifyError::Truncated { at: a, newest: true } if *a == at(&f.name(0), 21)),
        "{err}"
    );
}

#[tokio::test]
async fn a_forged_seal_is_found() {
    let f = one_file().await;
    let other = Fixture::new();
    let err = verify(f.dir(), None, other.keys.public_key()).unwrap_err();
    assert!(matches!(&err, VerifyError::BadSignature { at: a } if *a == at(&f.name(0), 22)));
    f.edit(0, |lines| {
        lines[21] = lines[21].replacen("\"last_seq\":20", "\"last_seq\":19", 1)
    });
    assert!(matches!(
        f.verify_without_mac_key(),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[tokio::test]
async fn rotation_by_size_makes_files_that_verify_together() {
    let f = rotated().await;
    let files = f.files();
    assert!(files.len() >= 3, "{files:?}");
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let seal = text.lines().last().unwrap().len() as u64 + 1;
        assert!(fs::metadata(file).unwrap().len() - seal <= MIN_FILE_BYTES);
    }
    let report = f.verify().unwrap();
    assert_eq!((report.files, report.records), (files.len(), 40));
    f.verify_without_mac_key().unwrap();
}

#[tokio::test]
async fn a_file_removed_from_the_middle_is_found() {
    let f = rotated().await;
    let second = f.files()[1].clone();
    let third = f.name(2);
    fs::remove_file(second).unwrap();
    for result in [f.verify(), f.verify_without_mac_key()] {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, VerifyError::MissingFile { at: a, .. } if *a == at(&third, 1)),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_renamed_file_is_found() {
    let f = one_file().await;
    let path = &f.files()[0];
    fs::rename(path, f.dir().join("audit-20200101-0001.jsonl")).unwrap();
    assert!(matches!(f.verify(), Err(VerifyError::Misnamed { .. })));
}

#[tokio::test]
async fn a_restart_continues_the_chain() {
    let f = Fixture::new();
    f.write(&f.config(), 10).await;
    f.write(&f.config(), 10).await;
    let report = f.verify().unwrap();
    assert_eq!((report.files, report.records, report.last_seq), (2, 20, 20));
    let second = fs::read_to_string(&f.files()[1]).unwrap();
    assert!(second.contains("\"prev_seq\":10,"), "{second}");
}

#[test]
fn the_day_changing_starts_a_new_file() {
    let f = Fixture::new();
    let day = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_064_800);
    let mut writer = LogWriter::open(&f.config(), f.keys.clone(), day).unwrap();
    writer.append(&Bodies::of(&[statement(1)]), day).unwrap();
    let next_day = day + Duration::from_secs(86_400);
    writer
        .append(&Bodies::of(&[statement(2)]), next_day)
        .unwrap();
    writer.close(next_day).unwrap();
    assert_eq!(f.name(0), "audit-20251125-0001.jsonl");
    assert_eq!(f.name(1), "audit-20251126-0001.jsonl");
    assert_eq!(f.verify().unwrap().records, 2);
}

#[tokio::test]
async fn a_file_left_open_by_a_crash_is_sealed_on_start() {
    let f = Fixture::new();
    let now = SystemTime::now();
    let mut writer = LogWriter::open(&f.config(), f.keys.clone(), now).unwrap();
    writer
        .append(&Bodies::of(&[statement(1), statement(2)]), now)
        .unwrap();
    writer.sync().unwrap();
    drop(writer);
    let path = f.files()[0].clone();
    let mut torn = fs::read(&path).unwrap();
    torn.extend_from_slice(b"{\"seq\":3,\"event\":\"sta");
    fs::write(&path, torn).unwrap();
    let err = f.verify().unwrap_err();
    assert!(
        matches!(err, VerifyError::Truncated { newest: true, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--live"), "{err}");
    let live = verify_live(f.dir(), Some(&MAC_KEY), f.keys.public_key()).unwrap();
    assert_eq!((live.records, live.open.clone()), (2, Some(f.name(0))));
    assert_eq!(live.checked[0].coverage, Coverage::Chained);
    assert_eq!(live.status(), Status::Ok);

    f.write(&f.config(), 3).await;
    let report = f.verify().unwrap();
    assert_eq!(report.recovered, vec![f.name(0)]);
    // The unclean-shutdown record first, then the three.
    assert_eq!((report.files, report.records, report.last_seq), (2, 6, 6));
    assert_eq!(
        report.unclean,
        vec![UncleanEnd {
            at: at(&f.name(1), 2),
            seq: 3,
            previous_last_seq: 2,
        }]
    );
    assert_eq!(report.status(), Status::Incomplete);
    assert_eq!(report.lost, 0, "uncounted: nothing says how many");
    let text = fs::read_to_string(&f.files()[1]).unwrap();
    let record: AuditRecord =
        serde_json::from_str(&strip_chain(text.lines().nth(1).unwrap())).unwrap();
    let AuditRecord::UncleanShutdown(end) = record else {
        panic!("not an unclean shutdown record: {text}")
    };
    assert_eq!(
        (end.file.as_str(), end.first_seq, end.last_seq, end.torn),
        (f.name(0).as_str(), 1, 2, true)
    );
    assert_eq!(end.records(), 2);
}

/// A record line without its `seq` and `mac`, as the record's JSON.
fn strip_chain(line: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
    let object = value.as_object_mut().unwrap();
    object.remove("seq");
    object.remove("mac");
    value.to_string()
}

#[tokio::test]
async fn a_clean_restart_writes_no_unclean_shutdown_record() {
    let f = Fixture::new();
    f.write(&f.config(), 2).await;
    f.write(&f.config(), 2).await;
    let report = f.verify().unwrap();
    assert_eq!((report.records, report.status()), (4, Status::Ok));
    assert!(report.unclean.is_empty() && report.recovered.is_empty());
}

#[tokio::test]
async fn a_run_killed_just_after_it_created_a_file_is_an_unclean_shutdown() {
    let f = Fixture::new();
    f.write(&f.config(), 2).await;
    // The next run created its file and died before the header was whole.
    let name = "audit-29991231-0001.jsonl";
    fs::write(f.dir().join(name), b"{\"audit\":\"pgv").unwrap();
    f.write(&f.config(), 1).await;
    let report = f.verify().unwrap();
    assert_eq!(report.records, 4, "2, the unclean shutdown record, 1");
    assert_eq!(report.unclean.len(), 1, "{report:?}");
    assert_eq!(report.unclean[0].previous_last_seq, 2);
    assert_eq!(report.status(), Status::Incomplete);
    assert!(!f.dir().join(name).exists());
}

/// A run killed again before it wrote anything but the unclean-shutdown
/// record still leaves that record: it is synced before the writer
/// takes anything else.
#[test]
fn the_unclean_shutdown_record_is_on_disk_when_open_returns() {
    let f = Fixture::new();
    let now = SystemTime::now();
    let mut writer = LogWriter::open(&f.config(), f.keys.clone(), now).unwrap();
    writer.append(&Bodies::of(&[statement(1)]), now).unwrap();
    drop(writer);
    let writer = LogWriter::open(&f.config(), f.keys.clone(), now).unwrap();
    assert_eq!(writer.written_on_open(), 1);
    drop(writer);
    // Killed: the second file is open, holding the record.
    let live = verify_live(f.dir(), Some(&MAC_KEY), f.keys.public_key()).unwrap();
    assert_eq!(live.unclean.len(), 1);
    assert_eq!(live.status(), Status::Incomplete);
    // The third start finds the second file open too, and says so again.
    LogWriter::open(&f.config(), f.keys.clone(), now)
        .unwrap()
        .close(now)
        .unwrap();
    let report = f.verify().unwrap();
    assert_eq!(report.unclean.len(), 2);
    assert_eq!(report.recovered.len(), 2);
}

#[test]
fn a_directory_has_one_writer_at_a_time() {
    let f = Fixture::new();
    let now = SystemTime::now();
    let mut first = LogWriter::open(&f.config(), f.keys.clone(), now).unwrap();
    first.append(&Bodies::of(&[statement(1)]), now).unwrap();
    let err = LogWriter::open(&f.config(), f.keys.clone(), now)
        .err()
        .unwrap();
    assert!(matches!(err, AuditError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("one writer"), "{err}");
    // The second writer touched nothing: the first goes on with its file.
    first.append(&Bodies::of(&[statement(2)]), now).unwrap();
    first.close(now).unwrap();
    // Closed, the directory is free for the next writer, and so it is
    // once a writer is dropped (as when its process ends).
    let second = LogWriter::open(&f.config(), f.keys.clone(), now).unwrap();
    drop(second);
    LogWriter::open(&f.config(), f.keys.clone(), now).unwrap();
    assert_eq!(f.verify().unwrap().records, 2);
}

#[test]
fn a_crashed_file_that_does_not_verify_stops_the_start() {
    let f = Fixture::new();
    let now = SystemTime::now();
    let mut writer = LogWriter::open(&f.config(), f.keys.clone(), now).unwrap();
    writer
        .append(&Bodies::of(&[statement(1), statement(2)]), now)
        .unwrap();
    drop(writer);
    f.edit(0, |lines| lines.swap(1, 2));
    let err = LogWriter::open(&f.config(), f.keys.clone(), now)
        .err()
        .unwrap();
    assert!(
        matches!(err, AuditError::Corrupt(VerifyError::SeqGap { .. })),
        "{err}"
    );
}

#[test]
fn retention_deletes_old_sealed_files_and_the_rest_verifies() {
    retention_deletes_old_sealed_files(false);
}

#[test]
fn retention_deletes_old_compressed_files_and_the_rest_verifies() {
    retention_deletes_old_sealed_files(true);
}

fn retention_deletes_old_sealed_files(compress: bool) {
    let f = Fixture::new();
    let today = SystemTime::now();
    let days_ago = |days: u64| today - Duration::from_secs(days * 86_400);
    let keep_all = AuditConfig {
        retention_days: 0,
        compress,
        ..f.config()
    };
    for (days, n) in [(400, 3), (200, 2), (100, 4), (1, 1)] {
        let mut writer = LogWriter::open(&keep_all, f.keys.clone(), days_ago(days)).unwrap();
        let records: Vec<_> = (0..n).map(statement).collect();
        writer
            .append(&Bodies::of(&records), days_ago(days))
            .unwrap();
        writer.close(days_ago(days)).unwrap();
    }
    assert_eq!(f.files().len(), 4);
    assert!(f.files().iter().all(|file| is_compressed(file) == compress));
    assert_eq!(f.verify().unwrap().anchor_seq, 0);

    let config = AuditConfig {
        retention_days: 180,
        ..keep_all
    };
    LogWriter::open(&config, f.keys.clone(), today).unwrap();
    assert_eq!(f.files().len(), 2);
    let report = f.verify().unwrap();
    assert_eq!(
        (
            report.files,
            report.records,
            report.anchor_seq,
            report.last_seq
        ),
        (2, 5, 5, 10)
    );
    f.verify_without_mac_key().unwrap();

    // The newest file stays however old, so the chain can continue.
    let later = today + Duration::from_secs(1000 * 86_400);
    LogWriter::open(&config, f.keys.clone(), later).unwrap();
    assert_eq!(f.files().len(), 1);
    assert_eq!(f.verify().unwrap().anchor_seq, 9);
}

fn is_compressed(path: &Path) -> bool {
    path.to_str().unwrap().ends_with(".jsonl.zst")
}

fn compressed(f: &Fixture) -> AuditConfig {
    AuditConfig {
        compress: true,
        ..f.config()
    }
}

/// The lines of a compressed file.
fn decompress(path: &Path) -> Vec<String> {
    use std::io::Read;
    let mut text = String::new();
    zstd::Decoder::new(fs::File::open(path).unwrap())
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text.lines().map(String::from).collect()
}

/// Writes `lines` to `path`, compressed.
fn write_compressed(path: &Path, lines: &[String]) {
    let text = lines.join("\n") + "\n";
    fs::write(path, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
}

#[tokio::test]
async fn rotated_files_are_compressed_and_verify_with_the_live_one() {
    let f = Fixture::new();
    let config = AuditConfig {
        max_file_bytes: MIN_FILE_BYTES,
        ..compressed(&f)
    };
    let (handle, task) = AuditSink::start(&config, f.keys.clone()).unwrap();
    for i in 0..40 {
        handle.record(statement(i)).unwrap();
    }
    wait_until(|| f.files().iter().filter(|file| is_compressed(file)).count() >= 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let live = verify_live(f.dir(), Some(&MAC_KEY), f.keys.public_key()).unwrap();
    assert_eq!(
        live.open
            .as_deref()
            .map(|open| is_compressed(Path::new(open))),
        Some(false)
    );
    assert!(live.files >= 3, "{live:?}");

    handle.shutdown().await.unwrap();
    task.await.unwrap().unwrap();
    let files = f.files();
    assert!(files.iter().all(|file| is_compressed(file)), "{files:?}");
    let report = f.verify().unwrap();
    assert_eq!((report.files, report.records), (files.len(), 40));
    f.verify_without_mac_key().unwrap();
    // The same bytes as written: header, records, seal.
    let lines = decompress(&files[0]);
    assert!(lines[0].contains(&format!(
        "\"file\":\"{}\"",
        f.name(0).trim_end_matches(".zst")
    )));
    assert!(lines.last().unwrap().starts_with("{\"seal\":"));
}

#[tokio::test]
async fn tampering_inside_a_compressed_file_is_found() {
    let f = Fixture::new();
    f.write(&compressed(&f), 20).await;
    let path = f.files()[0].clone();
    let mut lines = decompress(&path);
    lines[4] = lines[4].replacen("\"rows\":1,", "\"rows\":9,", 1);
    write_compressed(&path, &lines);
    let name = f.name(0);
    assert!(name.ends_with(".jsonl.zst"));
    let err = f.verify().unwrap_err();
    assert!(
        matches!(&err, VerifyError::MacMismatch { at: a } if *a == at(&name, 5)),
        "{err}"
    );
    assert!(matches!(
        f.verify_without_mac_key(),
        Err(VerifyError::HashMismatch { at: a }) if a == at(&name, 22)
    ));
}

#[tokio::test]
async fn lines_appended_as_another_frame_are_found() {
    use std::io::Write;
    let f = Fixture::new();
    f.write(&compressed(&f), 3).await;
    let path = f.files()[0].clone();
    let forged = decompress(&path)[2].clone();
    let member = zstd::encode_all(format!("{forged}\n").as_bytes(), 3).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&member)
        .unwrap();
    let err = f.verify().unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::BadSeal {
                problem: "lines follow the seal",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_compression_cut_short_keeps_the_original_and_is_done_again() {
    let f = Fixture::new();
    f.write(&f.config(), 5).await;
    let plain = f.files()[0].clone();
    let original = fs::read(&plain).unwrap();
    // A crash while writing the compressed copy: part of it is there.
    let packed = f.dir().join(format!("{}.zst", f.name(0)));
    fs::write(&packed, b"\x28\xb5\x2f\xfd cut short").unwrap();
    assert_eq!(f.verify().unwrap().records, 5, "the original is read");

    let mut writer = LogWriter::open(&compressed(&f), f.keys.clone(), SystemTime::now()).unwrap();
    writer.close(SystemTime::now()).unwrap();
    assert_eq!(f.files(), vec![packed.clone()]);
    assert_eq!(
        decompress(&packed).join("\n") + "\n",
        String::from_utf8(original).unwrap()
    );
    assert_eq!(f.verify().unwrap().records, 5);
}

#[tokio::test]
async fn records_reach_the_disk_before_shutdown() {
    let f = Fixture::new();
    let config = AuditConfig {
        fsync_interval_ms: 10,
        ..f.config()
    };
    let (handle, task) = AuditSink::start(&config, f.keys.clone()).unwrap();
    for i in 0..3 {
        handle.record(statement(i)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let live = verify_live(f.dir(), Some(&MAC_KEY), f.keys.public_key()).unwrap();
    assert_eq!((live.records, live.open), (3, Some(f.name(0))));
    handle.shutdown().await.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(f.verify().unwrap().records, 3);
}

#[tokio::test]
async fn dropping_the_last_handle_seals_the_log() {
    let f = Fixture::new();
    let (handle, task) = AuditSink::start(&f.config(), f.keys.clone()).unwrap();
    handle.record(statement(1)).unwrap();
    handle.clone().record(statement(2)).unwrap();
    drop(handle);
    task.await.unwrap().unwrap();
    assert_eq!(f.verify().unwrap().records, 2);
}

#[tokio::test]
async fn a_full_queue_refuses_records() {
    let f = Fixture::new();
    let config = AuditConfig {
        queue_capacity: 2,
        ..f.config()
    };
    let (handle, task) = AuditSink::start(&config, f.keys.clone()).unwrap();
    assert!(handle.healthy());
    handle.record(statement(1)).unwrap();
    handle.record(statement(2)).unwrap();
    assert_eq!(handle.record(statement(3)), Err(AuditUnavailable));
    assert!(!handle.healthy() && handle.refusing());
    assert_eq!(handle.dropped(), 1);
    handle.shutdown().await.unwrap();
    task.await.unwrap().unwrap();
    // The two records and a gap record for the third.
    let report = f.verify().unwrap();
    assert_eq!((report.records, report.lost), (3, 1));
    let text = fs::read_to_string(&f.files()[0]).unwrap();
    assert!(
        text.contains("\"lost\":1,\"cause\":\"queue_full\""),
        "{text}"
    );
    assert_eq!(handle.record(statement(4)), Err(AuditUnavailable));
}

#[tokio::test]
async fn with_continue_a_full_queue_counts_drops() {
    let f = Fixture::new();
    let config = AuditConfig {
        queue_capacity: 2,
        on_failure: OnFailure::Continue,
        ..f.config()
    };
    let (handle, task) = AuditSink::start(&config, f.keys.clone()).unwrap();
    for i in 0..5 {
        handle.record(statement(i)).unwrap();
    }
    assert!(!handle.healthy() && !handle.refusing());
    assert_eq!(handle.dropped(), 3);
    handle.shutdown().await.unwrap();
    task.await.unwrap().unwrap();
    let report = f.verify().unwrap();
    assert_eq!((report.records, report.lost, report.gaps.len()), (3, 3, 1));
}

#[tokio::test]
async fn a_failed_writer_refuses_until_it_resumes_and_writes_a_gap_record() {
    let f = Fixture::new();
    let (dir, handle, task) = broken_sink(&f).await;
    assert_eq!(handle.record(statement(2)), Err(AuditUnavailable));
    assert_eq!(handle.dropped(), 1);

    fs::remove_file(&dir).unwrap();
    wait_until(|| handle.healthy()).await;
    handle.record(statement(3)).unwrap();
    handle.shutdown().await.unwrap();
    task.await.unwrap().unwrap();
    let report = verify(&dir, Some(&MAC_KEY), f.keys.public_key()).unwrap();
    // The gap, statement 1 (kept through the failure), statement 3.
    assert_eq!((report.records, report.lost), (3, 1));
    assert_eq!(
        report.gaps,
        vec![Gap {
            at: at(&report_file(&dir), 2),
            seq: 1,
            lost: 1
        }]
    );
    let text = fs::read_to_string(dir.join(report_file(&dir))).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].contains("\"lost\":1,\"cause\":\"write_failed\""),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains("\"connection\":1,"), "{}", lines[2]);
    assert!(lines[3].contains("\"connection\":3,"), "{}", lines[3]);
}

#[tokio::test]
async fn a_log_still_down_at_shutdown_counts_what_it_could_not_write() {
    let f = Fixture::new();
    let (_, handle, task) = broken_sink(&f).await;
    assert!(matches!(handle.shutdown().await, Err(AuditError::Stopped)));
    assert!(task.await.unwrap().is_err());
    assert_eq!(handle.dropped(), 1);
}

/// A sink writing to a directory that is then replaced by a file, after
/// statement 1 was handed to it: the writer has failed.
async fn broken_sink(
    f: &Fixture,
) -> (
    PathBuf,
    AuditHandle,
    tokio::task::JoinHandle<Result<(), AuditError>>,
) {
    let dir = f.dir().join("log");
    let config = AuditConfig {
        dir: dir.clone(),
        ..f.config()
    };
    let (handle, task) = AuditSink::start(&config, f.keys.clone()).unwrap();
    fs::remove_dir(&dir).unwrap();
    fs::write(&dir, "not a directory").unwrap();
    handle.record(statement(1)).unwrap();
    wait_until(|| handle.refusing()).await;
    (dir, handle, task)
}

/// The name of the only file in `dir`.
fn report_file(dir: &Path) -> String {
    let mut names = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name());
    let name = names.next().unwrap().into_string().unwrap();
    assert!(names.next().is_none());
    name
}

/// Waits (at most ten seconds) until `condition` holds.
async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn an_empty_directory_does_not_verify() {
    let f = Fixture::new();
    assert!(matches!(f.verify(), Err(VerifyError::NoFiles(_))));
    assert!(matches!(
        verify(f.dir(), None, &[0; 31]),
        Err(VerifyError::PublicKey(31))
    ));
}

/// A log whose newest file is open, as while pgveil writes it: `sealed`
/// records in a sealed file, then `open` in the open one.
fn live_log(sealed: u64, open: u64) -> Fixture {
    let f = Fixture::new();
    let now = SystemTime::now();
    let mut writer = LogWriter::open(&f.config(), f.keys.clone(), now).unwrap();
    let records: Vec<_> = (0..sealed).map(statement).collect();
    writer.append(&Bodies::of(&records), now).unwrap();
    writer.close(now).unwrap();
    let mut writer = LogWriter::open(&f.config(), f.keys.clone(), now).unwrap();
    let records: Vec<_> = (0..open).map(statement).collect();
    writer.append(&Bodies::of(&records), now).unwrap();
    writer.sync().unwrap();
    // Dropped unsealed, as by a process still writing (or killed).
    drop(writer);
    f
}

#[test]
fn an_open_file_read_without_the_keyring_is_unverified_and_says_so() {
    let f = live_log(3, 4);
    let open = f.name(1);
    // A role name edited in the open file: nothing without the MAC key
    // can see it, so the result must not say ok.
    f.edit(1, |lines| {
        lines[2] = lines[2].replacen("\"role\":\"app\"", "\"role\":\"ops\"", 1)
    });
    let report = verify_live(f.dir(), None, f.keys.public_key()).unwrap();
    assert_eq!(report.status(), Status::Unverified);
    assert_eq!(Status::of(&Ok(report)).exit_code(), 4);
    let report = verify_live(f.dir(), None, f.keys.public_key()).unwrap();
    assert_eq!(
        report
            .checked
            .iter()
            .map(|c| (c.file.as_str(), c.coverage, c.records()))
            .collect::<Vec<_>>(),
        vec![
            (f.name(0).as_str(), Coverage::SealedOnly, 3),
            (open.as_str(), Coverage::Unverified, 4)
        ]
    );
    assert_eq!(report.records_by(Coverage::Unverified), 4);
    assert_eq!(report.coverage_of(2), Some(Coverage::SealedOnly));
    assert_eq!(report.coverage_of(5), Some(Coverage::Unverified));
    assert_eq!(report.coverage_of(8), None);
    // With the keyring the edit is found.
    let err = verify_live(f.dir(), Some(&MAC_KEY), f.keys.public_key()).unwrap_err();
    assert!(
        matches!(&err, VerifyError::MacMismatch { at: a } if *a == at(&open, 3)),
        "{err}"
    );
    assert_eq!(Status::of(&Err(err)), Status::Failed);
    // Without --live the open file is an error that suggests it.
    let err = verify(f.dir(), None, f.keys.public_key()).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Truncated { newest: true, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--live"), "{err}");
}

#[test]
fn an_open_file_read_with_the_keyring_is_chained_and_ok() {
    let f = live_log(2, 2);
    let report = verify_live(f.dir(), Some(&MAC_KEY), f.keys.public_key()).unwrap();
    assert_eq!(report.status(), Status::Ok);
    assert_eq!(
        (
            report.records_by(Coverage::Verified),
            report.records_by(Coverage::Chained)
        ),
        (2, 2)
    );
}

#[test]
fn a_file_unsealed_before_the_newest_is_truncated_and_not_live() {
    let f = live_log(2, 2);
    // Sealed from now on, the second file is no longer the newest.
    let now = SystemTime::now();
    LogWriter::open(&f.config(), f.keys.clone(), now)
        .unwrap()
        .close(now)
        .unwrap();
    f.edit(0, |lines| {
        lines.pop();
    });
    for result in [
        verify(f.dir(), Some(&MAC_KEY), f.keys.public_key()),
        verify_live(f.dir(), Some(&MAC_KEY), f.keys.public_key()),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, VerifyError::Truncated { newest: false, .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("--live"), "{err}");
    }
}

#[test]
fn statuses_rank_and_have_their_exit_codes() {
    assert!(Status::Ok < Status::Incomplete);
    assert!(Status::Incomplete < Status::Unverified);
    assert!(Status::Unverified < Status::Failed);
    let codes: Vec<u8> = [
        Status::Ok,
        Status::Failed,
        Status::Incomplete,
        Status::Unverified,
    ]
    .iter()
    .map(|s| s.exit_code())
    .collect();
    assert_eq!(codes, [0, 1, 3, 4]);
}

#[tokio::test]
async fn gaps_make_a_log_incomplete_and_unverified_records_outrank_them() {
    let f = Fixture::new();
    let config = AuditConfig {
        queue_capacity: 1,
        ..f.config()
    };
    let (handle, task) = AuditSink::start(&config, f.keys.clone()).unwrap();
    handle.record(statement(1)).unwrap();
    assert!(handle.record(statement(2)).is_err());
    handle.shutdown().await.unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(f.verify().unwrap().status(), Status::Incomplete);
    assert_eq!(
        f.verify_without_mac_key().unwrap().status(),
        Status::Incomplete
    );
    // Then a run that is still writing, read without the keyring.
    let now = SystemTime::now();
    let mut writer = LogWriter::open(&f.config(), f.keys.clone(), now).unwrap();
    writer.append(&Bodies::of(&[statement(3)]), now).unwrap();
    writer.sync().unwrap();
    let report = verify_live(f.dir(), None, f.keys.public_key()).unwrap();
    assert_eq!(
        (report.gaps.len(), report.status()),
        (1, Status::Unverified)
    );
    let report = verify_live(f.dir(), Some(&MAC_KEY), f.keys.public_key()).unwrap();
    assert_eq!(report.status(), Status::Incomplete);
    writer.close(now).unwrap();
}
