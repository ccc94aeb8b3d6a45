//! Access log: one record per request (gateway/accesslog.py ``AccessRecord``, same JSON),
//! appended by a writer thread to a spool in the format of logs/buffer.py ``SpoolBuffer``:
//! ``<dir>/<base offset, 20 digits>.seg`` files of JSON lines, a new segment past 64 MiB,
//! synced to disk at most a second after the write. The request path only hands the record
//! to a bounded queue; a full queue drops it and counts it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

const SEGMENT_SUFFIX: &str = ".seg";
const BATCH: usize = 1000;
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How long the writer waits when nothing is queued.
const LINGER: Duration = Duration::from_millis(5);

/// What happened to one request (no secrets, no bodies, no raw tokens).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct AccessRecord {
    pub trace_id: String,
    pub time: String,
    pub channel: Option<String>,
    pub interface: Option<String>,
    pub account: Option<String>,
    pub client_ip: Option<String>,
    pub method: String,
    pub status: u16,
    pub code: Option<&'static str>,
    pub latency_ms: f64,
    pub queue_wait_ms: f64,
    pub upstream: Option<String>,
    pub bytes_in: usize,
    pub bytes_out: usize,
}

/// ``datetime.now(UTC).isoformat()``: ``2026-12-03T04:27:08.384137+00:00``.
pub fn utc_now_iso() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    iso(now.as_secs() as i64, now.subsec_micros())
}

/// (year, month, day, seconds of the day) of a Unix time (Howard Hinnant's civil_from_days).
fn civil(seconds: i64) -> (i64, i64, i64, i64) {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest)
}

fn iso_formatted(seconds: i64, micros: u32) -> String {
    let (year, month, day, rest) = civil(seconds);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}+00:00",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn iso(seconds: i64, micros: u32) -> String {
    let (year, month, day, rest) = civil(seconds);
    if !(0..=9999).contains(&year) || micros > 999_999 {
        return iso_formatted(seconds, micros);
    }
    // Written digit by digit: core::fmt cost a sixth of the access record.
    let mut text = String::with_capacity(32);
    for (value, width, after) in [
        (year, 4, '-'),
        (month, 2, '-'),
        (day, 2, 'T'),
        (rest / 3600, 2, ':'),
        (rest % 3600 / 60, 2, ':'),
        (rest % 60, 2, '.'),
        (i64::from(micros), 6, '+'),
    ] {
        for place in (0..width).rev() {
            text.push(char::from(b'0' + (value / 10_i64.pow(place) % 10) as u8));
        }
        text.push(after);
    }
    text.push_str("00:00");
    text
}

/// Counters of the log path (the ``gridgate_log_records_*`` series).
#[derive(Default)]
pub struct LogCounters {
    pub appended: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_unavailable: AtomicU64,
    pub queued: AtomicU64,
}

/// The append-only segment files of one spool directory.
pub struct Spool {
    directory: PathBuf,
    segment_bytes: u64,
    base: u64,
    end: u64,
    file: File,
}

impl Spool {
    /// Open (or create) the spool in ``directory``; a torn last line is cut off.
    pub fn open(directory: &Path, segment_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(directory)?;
        let mut bases: Vec<u64> = fs::read_dir(directory)?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                entry
                    .file_name()
                    .to_str()?
                    .strip_suffix(SEGMENT_SUFFIX)?
                    .parse()
                    .ok()
            })
            .collect();
        bases.sort_unstable();
        let base = match bases.last() {
            Some(base) => *base,
            None => fs::read_to_string(directory.join("committed"))
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0),
        };
        let path = directory.join(format!("{base:020}{SEGMENT_SUFFIX}"));
        let data = fs::read(&path).unwrap_or_default();
        let keep = data
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |at| at + 1);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if keep != data.len() {
            file.set_len(keep as u64)?;
        }
        Ok(Self {
            directory: directory.to_owned(),
            segment_bytes,
            base,
            end: base + keep as u64,
            file,
        })
    }

    /// Append a block of whole lines.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        if self.end - self.base >= self.segment_bytes {
            self.file.sync_data()?;
            self.base = self.end;
            let path = self
                .directory
                .join(format!("{:020}{SEGMENT_SUFFIX}", self.base));
            self.file = OpenOptions::new().create(true).append(true).open(path)?;
        }
        self.file.write_all(payload)?;
        self.end += payload.len() as u64;
        Ok(())
    }

    /// Sync what was written to disk.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The request path's side: a bounded queue to the writer thread.
pub struct AccessLog {
    sender: Option<SyncSender<Vec<u8>>>,
    writer: Option<JoinHandle<()>>,
    pub counters: Arc<LogCounters>,
}

impl AccessLog {
    /// No spool: records are counted as dropped (tests, or logging switched off).
    pub fn disabled() -> Self {
        Self {
            sender: None,
            writer: None,
            counters: Arc::default(),
        }
    }

    /// A writer thread appending to the spool in ``directory``.
    pub fn start(directory: &Path, max_queue: usize, fsync: bool) -> io::Result<Self> {
        let spool = Spool::open(directory, 64 * 1024 * 1024)?;
        let (sender, receiver) = sync_channel(max_queue);
        let counters = Arc::new(LogCounters::default());
        let shared = counters.clone();
        let writer = std::thread::Builder::new()
            .name("gridgate-access-log".into())
            .spawn(move || write_loop(spool, receiver, shared, fsync))?;
        Ok(Self {
            sender: Some(sender),
            writer: Some(writer),
            counters,
        })
    }

    /// Redis mode: a writer thread adding the records to the stream ``key`` (logs/buffer.py
    /// ``RedisStreamBuffer.append``: ``XADD <key> MAXLEN ~ <max_len> * r <record JSON>``), up
    /// to [`BATCH`] per pipelined round trip, at most [`LINGER`] after the first one waits.
    /// While Redis is unreachable the batch is kept and retried and new records wait in the
    /// queue of ``max_queue``; past that they are dropped and counted (``queue_full``).
    pub fn start_stream(
        client: redis::Client,
        key: String,
        max_len: u64,
        max_queue: usize,
    ) -> io::Result<Self> {
        let (sender, receiver) = sync_channel(max_queue);
        let counters = Arc::new(LogCounters::default());
        let shared = counters.clone();
        let writer = std::thread::Builder::new()
            .name("gridgate-access-stream".into())
            .spawn(move || stream_loop(&client, &key, max_len, receiver, shared))?;
        Ok(Self {
            sender: Some(sender),
            writer: Some(writer),
            counters,
        })
    }

    /// Hand the record over without waiting; False when it was dropped.
    pub fn offer(&self, record: &AccessRecord) -> bool {
        let Some(sender) = &self.sender else {
            return false;
        };
        let Ok(line) = serde_json::to_vec(record) else {
            return false;
        };
        match sender.try_send(line) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Wait (up to ``timeout``) until every record offered so far is written.
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.sender.is_some()
            && self.counters.queued.load(Ordering::Acquire) > 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stop accepting records, write what is queued and sync.
    pub fn close(&mut self) {
        self.sender = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_loop(
    mut spool: Spool,
    receiver: Receiver<Vec<u8>>,
    counters: Arc<LogCounters>,
    fsync: bool,
) {
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    let mut payload = Vec::with_capacity(256 * BATCH);
    let mut open = true;
    while open {
        // Poll rather than block: a receiver blocked in recv makes every sender wake it (a
        // futex and a context switch per request); a linger of a few ms batches instead.
        let mut count = 0u64;
        while count < BATCH as u64 {
            match receiver.try_recv() {
                Ok(line) => {
                    payload.extend_from_slice(&line);
                    payload.push(b'\n');
                    count += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if count == 0 && open {
            std::thread::sleep(LINGER);
        }
        if count > 0 {
            match spool.append(&payload) {
                Ok(()) => {
                    counters.appended.fetch_add(count, Ordering::Relaxed);
                    unsynced = true;
                }
                Err(_) => {
                    counters
                        .dropped_unavailable
                        .fetch_add(count, Ordering::Relaxed);
                }
            }
            // Only now: `flush` waits for this to reach zero.
            counters.queued.fetch_sub(count, Ordering::Release);
            payload.clear();
        }
        if fsync && unsynced && last_sync.elapsed() >= SYNC_INTERVAL {
            let _ = spool.sync();
            unsynced = false;
            last_sync = Instant::now();
        }
    }
    if unsynced {
        let _ = spool.sync();
    }
}

/// How long a Redis write may take before the connection is given up and made again.
const STREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// After the engine stops, how long the writer keeps trying an unreachable Redis.
const STREAM_CLOSE_GRACE: Duration = Duration::from_secs(3);

fn stream_connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let connection = client.get_connection_with_timeout(STREAM_TIMEOUT)?;
    connection.set_read_timeout(Some(STREAM_TIMEOUT))?;
    connection.set_write_timeout(Some(STREAM_TIMEOUT))?;
    Ok(connection)
}

fn stream_loop(
    client: &redis::Client,
    key: &str,
    max_len: u64,
    receiver: Receiver<Vec<u8>>,
    counters: Arc<LogCounters>,
) {
    let mut connection: Option<redis::Connection> = None;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let mut open = true;
    let mut closed_at: Option<Instant> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        while open && batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(line) => batch.push(line),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        if batch.is_empty() {
            if !open {
                return;
            }
            std::thread::sleep(LINGER);
            continue;
        }
        if !open && closed_at.is_none() {
            closed_at = Some(Instant::now());
        }
        let written = (|| -> redis::RedisResult<()> {
            if connection.is_none() {
                connection = Some(stream_connect(client)?);
            }
            let mut pipe = redis::pipe();
            for record in &batch {
                pipe.cmd("XADD")
                    .arg(key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(max_len)
                    .arg("*")
                    .arg("r")
                    .arg(record.as_slice())
                    .ignore();
            }
            let connection = connection.as_mut().expect("connected above");
            pipe.query::<()>(connection)
        })();
        let count = batch.len() as u64;
        match written {
            Ok(()) => {
                counters.appended.fetch_add(count, Ordering::Relaxed);
                counters.queued.fetch_sub(count, Ordering::Release);
                batch.clear();
                backoff = Duration::from_millis(50);
            }
            Err(_) => {
                // Kept and retried: a write cut off midway may add some records twice
                // (at least once, as Python's pipelined append).
                connection = None;
                if closed_at.is_some_and(|at| at.elapsed() >= STREAM_CLOSE_GRACE) {
                    let rest = count + receiver.try_iter().count() as u64;
                    counters
                        .dropped_unavailable
                        .fetch_add(rest, Ordering::Relaxed);
                    counters.queued.fetch_sub(rest, Ordering::Release);
                    return;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            time: iso(1_764_720_000, 384_137),
            channel: Some("app".into()),
            interface: None,
            account: None,
            client_ip: Some("127.0.0.1".into()),
            method: "GET".into(),
            status: 404,
            code: Some("not_found"),
            latency_ms: 0.123,
            queue_wait_ms: 0.0,
            upstream: None,
            bytes_in: 0,
            bytes_out: 211,
        }
    }

    #[test]
    fn records_serialize_as_python_does_and_land_in_the_spool() {
        assert_eq!(
            iso(1_764_720_000, 384_137),
            "2025-12-03T00:00:00.384137+00:00"
        );
        // The digit-by-digit writing against core::fmt, leap days and the ends included.
        let mut at: i64 = -62_167_219_200; // 0000-01-01
        while at < 253_402_300_800 {
            let micros = (at.rem_euclid(1_000_000)) as u32;
            assert_eq!(iso(at, micros), iso_formatted(at, micros));
            at += 7_777_777;
        }
        for at in [
            0,
            951_782_400,
            253_402_300_799,
            253_402_300_800,
            -62_167_219_201,
        ] {
            assert_eq!(iso(at, 999_999), iso_formatted(at, 999_999));
        }
        let line = String::from_utf8(serde_json::to_vec(&record()).unwrap()).unwrap();
        assert_eq!(
            line,
            r#"{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","time":"2025-12-03T00:00:00.384137+00:00","channel":"app","interface":null,"account":null,"client_ip":"127.0.0.1","method":"GET","status":404,"code":"not_found","latency_ms":0.123,"queue_wait_ms":0.0,"upstream":null,"bytes_in":0,"bytes_out":211}"#
        );
        let dir = std::env::temp_dir().join(format!("gg-spool-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("00000000000000000000.seg"), b"{\"a\":1}\n{\"torn").unwrap();
        let mut log = AccessLog::start(&dir, 10, true).unwrap();
        assert!(log.offer(&record()));
        log.close();
        let text = fs::read_to_string(dir.join("00000000000000000000.seg")).unwrap();
        assert_eq!(text, format!("{{\"a\":1}}\n{line}\n"));
        assert_eq!(log.counters.appended.load(Ordering::Relaxed), 1);
        fs::remove_dir_all(&dir).unwrap();
    }
}
