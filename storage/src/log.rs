//! The sled layer: the only module that knows sled. It owns the trees of DESIGN §3
//! and the durable-flush protocol.
//!
//! Trees:
//! - `log`: seq (u64 BE) → the rmp [`Record`], the source of truth, followed by the
//!   content of the node it creates when that content is smaller than
//!   [`BLOB_CANDIDATE_BYTES`] (nearly all content). The value is then framed as `0xC1`,
//!   the record's length (u32 BE), the record, the content (see [`LogEntry`]); `0xC1` is
//!   the one MessagePack marker no encoding uses, so a plain record (a record without
//!   such content, and every record written before content moved here) is told apart by
//!   its first byte. The record still carries the content's BLAKE3 hash, and verify
//!   checks it. The consecutive events of one group are stored together, one key per
//!   [`pack`] of up to 6 KiB (the key is the seq of its first event): sled's cost is per
//!   key, and this made the writer's CPU per event a third lower and its bytes written
//!   ~5 % fewer (`storage/examples/append_load.rs`; BENCHMARKS.md, stop 30). Stores
//!   written before packs have one key per event, and both read alike.
//! - `content`: BLAKE3 (32 bytes) → UTF-8 bytes: larger content, written once per
//!   distinct content (a repeated large file costs nothing the second time); and all
//!   content of stores written before content was kept by seq.
//! - `text`: seq (u64 BE) → UTF-8 bytes: content of stores written before it moved into
//!   the log value (read only). Keyed by seq rather than hash, its inserts were
//!   sequential like the log's (keyed by hash they landed all over the tree and doubled
//!   sled's space amplification, `benches/footprint.rs`); in the log value it costs no
//!   key and no batch of its own, which made the writer's sled work ~25 % cheaper
//!   (`storage/examples/append_load.rs`, `raw` against `raw2`).
//!
//!   A node's content is the content in its log value if there is one, else its `text`
//!   entry, else the `content` entry of its hash ([`Engine::content_at`]).
//! - `cursors`: sink name → seq (u64 BE).
//! - `dead`: sink name ‖ 0 ‖ seq (u64 BE) → error text, for poison events not resolved.
//! - `arrivals`: seq (u64 BE) → time (µs, i64 BE): when a group holding records older than
//!   their arrival (imports keep their original time) was written, keyed by its first seq.
//!   The arrival of an event is the later of its own time and the last mark at or
//!   before its seq (see [`Engine::arrival`]).
//! - `meta`: `store_id` → 16 bytes: the store's identity, created with it;
//!   `committed` → seq (u64 BE): the commit mark, the last seq of the last group
//!   written whole (see the commit protocol below).
//! - `dead_acked`: same key → error text and acknowledgement note: dead letters an
//!   operator accepted as lost (`arbor sync dead-letters ack`).
//!
//! DESIGN §3 also names two secondary maps, id → seq and workflow → its events. They
//! are derived from the log, so they live in memory with the index (`by_node`,
//! `by_event` and each workflow's node and event seqs, see [`crate::index`]) and are
//! rebuilt with it at open, which reads the whole log anyway. Keeping them in sled
//! trees cost two more keys per event on disk (space amplification 4.9× instead of
//! the ~2× DESIGN allows) and two more sled batches per group on the writer; stores
//! written before that have `ids` and `wf` trees, which [`Engine::open`] drops.
//!
//! Commit protocol: one group = plain inserts, in this order (see
//! [`Engine::write_group`]):
//! 1. `content`: the group's new large blobs, if any (content-addressed, so writing one
//!    twice or leaving one unreferenced is harmless);
//! 2. `log`: the group's records with their other content, in seq order, in packs;
//! 3. `meta`/`committed`: the group's last seq, **the commit point**.
//!
//! then [`Engine::make_durable`]: `Db::flush` (which on Linux only issues
//! `sync_file_range`, sled issue #1452), followed by `fdatasync` of sled's data file and
//! of any new blob files (sled writes values over its blob threshold to separate files
//! and never syncs them).
//!
//! Why this is crash-safe without a transaction: sled recovers a *prefix* of its
//! write-ahead log (recovery stops at the first torn message, `LogIter`), and one
//! writer thread makes these inserts in this order. So after a crash a recovered log
//! record has its content (in the same value, or written before it), and if a group's
//! commit mark is recovered, so is all of the group. Records above the commit mark
//! belong to a group a crash cut short; none of it was acknowledged (with `fsync`
//! durability a group is acknowledged only after it is durable, mark included), and
//! [`Engine::open`] removes them, so that a multi-node request is in the log whole or
//! not at all.
//!
//! Why not one `apply_batch` per group, which sled recovers whole: sled serialises
//! batches against flushes (`apply_batch` takes its global lock exclusively, and
//! `Db::flush` holds it shared until the IO buffer is on disk), so the writer could not
//! write group N+1 while group N was being flushed. Plain inserts share the lock with
//! the flush: 64 concurrent single appends went from 0.57x to ~0.7x of raw sled's rate
//! (BENCHMARKS.md).
//!
//! Stores written before the commit mark (every group one batch) get one at open: the
//! log's last seq. Stores of the version that wrote `text` batches before the log batch
//! may hold `text` entries above the log's last seq (a group whose log batch a crash
//! lost); [`Engine::open`] removes them, since those seqs will be given to other
//! records, which must not read them as their content.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::StorageError;
use crate::model::Seq;
use crate::record::{Hash, Record};

mod pack;

use pack::Values;

/// Trees of earlier versions that [`Engine::open`] drops.
const LEGACY_TREES: [&str; 2] = ["ids", "wf"];

/// The `meta` key of the commit mark (see the module docs).
const COMMITTED: &[u8] = b"committed";

/// Values at least this large may have gone to a sled blob file.
const BLOB_CANDIDATE_BYTES: usize = 32 * 1024;

/// The open sled database and its trees.
pub struct Engine {
    db: sled::Db,
    log: sled::Tree,
    text: sled::Tree,
    content: sled::Tree,
    cursors: sled::Tree,
    dead: sled::Tree,
    /// The admin log (token events), seq → encoded [`crate::admin::AdminEvent`].
    admin: sled::Tree,
    dead_acked: sled::Tree,
    arrivals: sled::Tree,
    /// The store's identity and the commit mark.
    meta: sled::Tree,
    /// The store's identity (the `meta` tree's `store_id`).
    store_id: Uuid,
    /// sled's main data file, fdatasync'd after each flush.
    data_file: File,
    blob_dir: PathBuf,
    /// [`sled::blobs_written`] at the last listing of the blob directory, and the blob
    /// files synced by then.
    synced_blobs: parking_lot::Mutex<(u64, HashSet<PathBuf>)>,
    /// Fault tests: while set, [`Engine::make_durable`] fails where its fdatasync would,
    /// after sled's flush has written the group.
    #[cfg(test)]
    fail_sync: std::sync::atomic::AtomicBool,
    /// Fault tests: [`Engine::write_group`] fails (as a sled write error would) after
    /// writing this many of a group's records; `usize::MAX` for never.
    #[cfg(test)]
    fail_write_after: std::sync::atomic::AtomicUsize,
    /// Declared last so that it drops last: waits for sled to let go of the directory.
    _release: LockRelease,
}

/// How long a dropped [`Engine`] waits for sled to release the directory lock.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long [`Engine::open`] waits for a lock held by an engine that is closing.
const OPEN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Makes "the last handle is dropped" mean "the directory can be opened again".
///
/// sled holds an exclusive `flock` on `<dir>/db` for as long as anything inside it
/// holds its configuration, and its I/O thread pool can outlive the last `Db` handle by
/// a moment. Without this, a close followed by a reopen in the same process (a restart,
/// a test) fails now and then with "could not acquire lock" under load. Dropped after
/// every sled handle of the engine, it takes the lock itself (flock conflicts between
/// open files even within one process) and releases it at once.
struct LockRelease {
    lock_file: PathBuf,
}

impl Drop for LockRelease {
    fn drop(&mut self) {
        if let Err(e) = wait_for_sled_release(&self.lock_file, LOCK_RELEASE_WAIT) {
            tracing::warn!(file = %self.lock_file.display(), error = %e, "sled kept its lock after close");
        }
    }
}

/// Waits until nothing holds sled's exclusive `flock` on `lock_file` (`<dir>/db`), or
/// `wait` has passed (an error then). A file that cannot be opened is nothing to wait for.
///
/// Used when an [`Engine`] drops, and by tests that drive raw sled in a directory they
/// reopen; not part of the storage API.
#[doc(hidden)]
pub fn wait_for_sled_release(lock_file: &Path, wait: std::time::Duration) -> std::io::Result<()> {
    let Ok(file) = File::open(lock_file) else {
        return Ok(());
    };
    let deadline = std::time::Instant::now() + wait;
    loop {
        match fs2::FileExt::try_lock_exclusive(&file) {
            Ok(()) => return fs2::FileExt::unlock(&file),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Everything one group writes.
#[derive(Default)]
pub struct GroupWrite {
    /// Log values ([`log_value`]) with their seqs.
    pub records: Vec<(Seq, Vec<u8>)>,
    /// New large content blobs, by hash.
    pub content: Vec<(Hash, Vec<u8>)>,
    /// An arrival mark (first seq, now) when the group holds records older than now.
    pub arrival: Option<(Seq, crate::time::Timestamp)>,
}

/// First byte of a log value that carries its node's content after the record: the
/// MessagePack marker `0xC1`, which no encoding uses, so no plain record starts with it.
const WITH_TEXT: u8 = 0xc1;

/// [`WITH_TEXT`] and the record's length (u32 BE).
const FRAME_HEADER: usize = 5;

/// One log value, split (see the module docs): the encoded record and the content
/// stored with it, both sharing the value's buffer.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// The encoded [`Record`].
    pub record: sled::IVec,
    /// The content of the node the record creates, when it is kept in the log value.
    pub text: Option<sled::IVec>,
}

impl LogEntry {
    /// Splits a log value; an error if its frame is cut or inconsistent.
    pub fn split(value: sled::IVec) -> Result<LogEntry, StorageError> {
        if value.first() != Some(&WITH_TEXT) {
            return Ok(LogEntry {
                record: value,
                text: None,
            });
        }
        let len = value
            .get(1..FRAME_HEADER)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| StorageError::Corrupt("log value cut inside its header".into()))?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let end = FRAME_HEADER
            .checked_add(len)
            .filter(|end| *end <= value.len())
            .ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "log value of {} bytes says its record has {len}",
                    value.len()
                ))
            })?;
        Ok(LogEntry {
            record: value.subslice(FRAME_HEADER, len),
            text: Some(value.subslice(end, value.len() - end)),
        })
    }

    /// The log value of an encoded record and the content kept with it (tools and
    /// tests; the writer builds it in place, see [`log_value`]).
    pub fn join(record: &[u8], text: Option<&[u8]>) -> Result<Vec<u8>, StorageError> {
        let Some(text) = text else {
            return Ok(record.to_vec());
        };
        let mut v = Vec::with_capacity(FRAME_HEADER + record.len() + text.len());
        v.push(WITH_TEXT);
        v.extend_from_slice(&frame_len(record.len())?);
        v.extend_from_slice(record);
        v.extend_from_slice(text);
        Ok(v)
    }
}

fn frame_len(len: usize) -> Result<[u8; 4], StorageError> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| StorageError::Encode(format!("a record of {len} bytes")))
}

/// Seals `record` (sets its hash, see [`Record::seal_into`]) and encodes its log value,
/// with `text` after it when given (see the module docs), in one buffer.
pub(crate) fn log_value(record: &mut Record, text: Option<&[u8]>) -> Result<Vec<u8>, StorageError> {
    let Some(text) = text else {
        let mut v = Vec::with_capacity(384);
        record.seal_into(&mut v)?;
        return Ok(v);
    };
    let mut v = Vec::with_capacity(FRAME_HEADER + 384 + text.len());
    v.extend_from_slice(&[WITH_TEXT, 0, 0, 0, 0]);
    record.seal_into(&mut v)?;
    let len = frame_len(v.len() - FRAME_HEADER)?;
    v[1..FRAME_HEADER].copy_from_slice(&len);
    v.extend_from_slice(text);
    Ok(v)
}

fn seq_of(bytes: &[u8]) -> Result<Seq, StorageError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("seq value of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

impl Engine {
    /// Opens (or creates) the database at `dir`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Engine, StorageError> {
        std::fs::create_dir_all(dir)?;
        // An engine of this process may still be closing: its last handle dropped on
        // another thread (a sync worker's read finishing after the worker stopped, a
        // task that outlived a timeout), and sled's I/O pool lets go a moment later.
        // Wait for that, briefly; a lock still held after it is another process's (or
        // a handle still in use), and sled's own "could not acquire lock" says so.
        if let Err(e) = wait_for_sled_release(&dir.join("db"), OPEN_LOCK_WAIT) {
            tracing::debug!(dir = %dir.display(), error = %e, "sled's lock still held; opening anyway");
        }
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        let data_file = File::open(dir.join("db"))?;
        let mut e = Engine {
            log: db.open_tree("log")?,
            text: db.open_tree("text")?,
            content: db.open_tree("content")?,
            cursors: db.open_tree("cursors")?,
            dead: db.open_tree("dead")?,
            admin: db.open_tree("admin")?,
            dead_acked: db.open_tree("dead_acked")?,
            arrivals: db.open_tree("arrivals")?,
            store_id: store_id(&db.open_tree("meta")?)?,
            meta: db.open_tree("meta")?,
            db,
            data_file,
            blob_dir: dir.join("blobs"),
            synced_blobs: parking_lot::Mutex::new((0, HashSet::new())),
            #[cfg(test)]
            fail_sync: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            fail_write_after: std::sync::atomic::AtomicUsize::new(usize::MAX),
            _release: LockRelease {
                lock_file: dir.join("db"),
            },
        };
        *e.synced_blobs.get_mut() = (sled::blobs_written(), e.blob_files()?);
        e.drop_legacy_trees()?;
        e.remove_uncommitted()?;
        e.remove_orphan_texts()?;
        Ok(e)
    }

    /// The seq of the log's last record (0 for an empty log).
    fn last_log_seq(&self) -> Result<Seq, StorageError> {
        Ok(self.last_value()?.map_or(0, |(seq, _)| seq))
    }

    /// The log's last value and its seq.
    fn last_value(&self) -> Result<Option<(Seq, sled::IVec)>, StorageError> {
        match self.log.last()? {
            Some((k, v)) => Values::new(seq_of(&k)?, v).last(),
            None => Ok(None),
        }
    }

    /// The sled value that holds `seq` if the log has it: the one under the greatest
    /// key at or below it (see [`pack`]), with its key.
    fn holder(&self, seq: Seq) -> Result<Option<(Seq, Values)>, StorageError> {
        holder(&self.log, seq)
    }

    /// The commit mark: the last seq of the last group written whole.
    fn committed(&self) -> Result<Option<Seq>, StorageError> {
        match self.meta.get(COMMITTED)? {
            Some(v) => seq_of(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Removes log records above the commit mark: a group a crash cut short, none of
    /// it acknowledged (see the module docs). A store without a mark (written before
    /// it, one batch per group; or new) gets one at its log's last seq. Returns how
    /// many records were removed.
    fn remove_uncommitted(&self) -> Result<usize, StorageError> {
        let Some(mark) = self.committed()? else {
            self.meta
                .insert(COMMITTED, &self.last_log_seq()?.to_be_bytes())?;
            self.make_durable()?;
            return Ok(0);
        };
        // A pack never spans two groups, so none starts at or below the mark and ends
        // above it; should one, its part above the mark is cut as well.
        let mut records = 0;
        let mut spanning = None;
        if let Some((key, values)) = self.holder(mark)? {
            let entries: Vec<(Seq, sled::IVec)> = values.collect::<Result<_, _>>()?;
            if entries.last().is_some_and(|(seq, _)| *seq > mark) {
                let kept: Vec<&(Seq, sled::IVec)> =
                    entries.iter().filter(|(seq, _)| *seq <= mark).collect();
                records += entries.len() - kept.len();
                let mut buf = Vec::new();
                pack::encode(kept.iter().map(|(s, v)| (*s, v.as_ref())), &mut buf)?;
                spanning = Some((key, buf));
            }
        }
        let mut cut = Vec::new();
        for kv in self.log.range(mark.saturating_add(1).to_be_bytes()..) {
            let (k, v) = kv?;
            records += Values::new(seq_of(&k)?, v).count();
            cut.push(k);
        }
        // Newest first: a crash in here leaves a shorter tail, still above the mark.
        for k in cut.iter().rev() {
            self.log.remove(k)?;
        }
        if let Some((key, pack)) = spanning {
            self.log.insert(key.to_be_bytes(), pack)?;
        }
        if records > 0 {
            self.make_durable()?;
            tracing::warn!(
                records,
                committed = mark,
                "removed the records of a group a crash cut short (never acknowledged)"
            );
        }
        Ok(records)
    }

    /// Removes `text` entries above the log's last seq: content of a group whose log
    /// batch a crash lost (see the module docs). Returns how many.
    fn remove_orphan_texts(&self) -> Result<usize, StorageError> {
        let last = self.last_log_seq()?;
        let mut orphans = Vec::new();
        for kv in self.text.range(last.saturating_add(1).to_be_bytes()..) {
            let (k, _) = kv?;
            orphans.push(k);
        }
        let n = orphans.len();
        for k in orphans {
            self.text.remove(k)?;
        }
        if n > 0 {
            self.make_durable()?;
            tracing::warn!(
                entries = n,
                "removed content of a group the log does not hold (interrupted write)"
            );
        }
        Ok(n)
    }

    /// Drops the `ids` and `wf` trees of a store written before they moved to memory
    /// (see the module docs), reclaiming their space. Harmless to interrupt: they are
    /// derived data that nothing reads any more.
    fn drop_legacy_trees(&self) -> Result<(), StorageError> {
        let names = self.db.tree_names();
        let mut dropped = false;
        for legacy in LEGACY_TREES {
            if names.iter().any(|n| n.as_ref() == legacy.as_bytes()) {
                dropped |= self.db.drop_tree(legacy)?;
            }
        }
        if dropped {
            tracing::info!("dropped the ids and wf trees (now held in memory)");
            self.db.flush()?;
        }
        Ok(())
    }

    fn blob_files(&self) -> Result<HashSet<PathBuf>, StorageError> {
        match std::fs::read_dir(&self.blob_dir) {
            Ok(rd) => Ok(rd.filter_map(|e| e.ok().map(|e| e.path())).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes one group (not yet durable): large content, the log values, then the
    /// commit mark, the commit point (see the module docs). Called by one thread at a
    /// time (the store's writer): the mark's order after the records is the protocol.
    pub fn write_group(&self, g: &GroupWrite) -> Result<(), StorageError> {
        for (h, bytes) in &g.content {
            self.content.insert(h, bytes.as_slice())?;
        }
        if let Some((seq, at)) = g.arrival {
            // Before the records: a mark without its records (a crash in between) is
            // harmless, it is older than anything written at that seq later.
            self.arrivals
                .insert(seq.to_be_bytes(), &at.micros().to_be_bytes())?;
        }
        let mut rest = g.records.as_slice();
        let mut buf = Vec::new();
        let mut written = 0;
        while let Some(((first, value), _)) = rest.split_first() {
            let n = pack::take(rest);
            let (values, after) = rest.split_at(n);
            self.injected_write_failure(written)?;
            if n == 1 {
                self.log.insert(first.to_be_bytes(), value.as_slice())?;
            } else {
                buf.clear();
                pack::encode(values.iter().map(|(s, v)| (*s, v.as_slice())), &mut buf)?;
                self.log.insert(first.to_be_bytes(), buf.as_slice())?;
            }
            written += 1;
            rest = after;
        }
        if let Some((last, _)) = g.records.last() {
            self.meta.insert(COMMITTED, &last.to_be_bytes())?;
        }
        Ok(())
    }

    /// Fault tests: fails before a group's sled value `i` (a pack or a plain value) when
    /// told to.
    #[cfg(test)]
    fn injected_write_failure(&self, i: usize) -> Result<(), StorageError> {
        if i == self
            .fail_write_after
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(std::io::Error::other("injected write failure").into());
        }
        Ok(())
    }

    /// Never fails outside the fault tests.
    #[cfg(not(test))]
    #[inline(always)]
    fn injected_write_failure(&self, _i: usize) -> Result<(), StorageError> {
        Ok(())
    }

    /// Writes one admin event (not yet durable).
    pub fn put_admin(&self, seq: Seq, bytes: &[u8]) -> Result<(), StorageError> {
        self.admin.insert(seq.to_be_bytes(), bytes)?;
        Ok(())
    }

    /// Iterates the admin log from `after + 1`: (seq, encoded event).
    pub fn scan_admin(
        &self,
        after: Seq,
    ) -> impl Iterator<Item = Result<(Seq, sled::IVec), StorageError>> + '_ {
        self.admin
            .range(after.saturating_add(1).to_be_bytes()..)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((seq_of(&k)?, v))
            })
    }

    /// Makes everything written so far durable (see the module docs): sled's flush, then
    /// every blob file sled has written since the last call, then sled's data file.
    ///
    /// sled writes to a file of its own not only a value over its blob threshold but any
    /// page over 128 KiB when it rewrites one whole (a leaf of large records), and never
    /// syncs them; so the blob directory is listed whenever sled has written a blob file
    /// since the last listing (`sled::blobs_written`, our patch 4), not only after a
    /// large value (`blob_files_of_rewritten_pages_are_synced_before_the_answer`). sled
    /// writes a blob inside the reservation of the log message that points to it, and
    /// its flush waits for those reservations: so after the flush every blob the flushed
    /// log points to is written and counted. Blobs are synced before the data file.
    pub fn make_durable(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        {
            // Listed under the lock, so that two callers (the syncer and a cursor
            // flush, say) cannot replace the set with an older listing.
            let mut synced = self.synced_blobs.lock();
            // Read before listing: a blob written after this read moves it again.
            let written = sled::blobs_written();
            if written == synced.0 {
                return self.sync_data_file();
            }
            let now = self.blob_files()?;
            let mut synced_any = false;
            for path in now.difference(&synced.1) {
                File::open(path)?.sync_data()?;
                synced_any = true;
            }
            if synced_any {
                File::open(&self.blob_dir)?.sync_all()?;
            }
            *synced = (written, now);
        }
        self.sync_data_file()
    }

    /// fdatasync of sled's data file, the last step of [`Engine::make_durable`].
    fn sync_data_file(&self) -> Result<(), StorageError> {
        #[cfg(test)]
        if self.fail_sync.load(std::sync::atomic::Ordering::Acquire) {
            return Err(std::io::Error::other("injected fdatasync failure").into());
        }
        self.data_file.sync_data()?;
        Ok(())
    }

    /// Whether a group of this value size may write blob files.
    pub fn is_blob_candidate(len: usize) -> bool {
        len >= BLOB_CANDIDATE_BYTES
    }

    /// The record at `seq`.
    pub fn record(&self, seq: Seq) -> Result<Option<Record>, StorageError> {
        match self.entry(seq)? {
            Some(e) => Record::decode(&e.record).map(Some),
            None => Ok(None),
        }
    }

    /// The log entry at `seq`.
    pub fn entry(&self, seq: Seq) -> Result<Option<LogEntry>, StorageError> {
        log_entry(&self.log, seq)
    }

    /// The last record of the log.
    pub fn last_record(&self) -> Result<Option<Record>, StorageError> {
        match self.last_value()? {
            Some((_, v)) => Record::decode(&LogEntry::split(v)?.record).map(Some),
            None => Ok(None),
        }
    }

    /// Iterates the log from `after + 1`: (seq, entry).
    pub fn scan(
        &self,
        after: Seq,
    ) -> impl Iterator<Item = Result<(Seq, LogEntry), StorageError>> + '_ {
        let from = after.saturating_add(1);
        // The value holding `from` may be a pack under a smaller key.
        let (start, failed) = match self.holder(from) {
            Ok(Some((key, values))) if values.is_pack() => (key, None),
            Ok(_) => (from, None),
            Err(e) => (from, Some(e)),
        };
        Scan {
            keys: self.log.range(start.to_be_bytes()..),
            values: None,
            after,
            failed,
        }
    }

    /// The content of the node created at `seq`, whose hash is `h`: the content in its
    /// log value, else its legacy `text` entry, else the `content` entry of `h` (see the
    /// module docs).
    pub fn content_at(&self, seq: Seq, h: &Hash) -> Result<Option<sled::IVec>, StorageError> {
        if let Some(LogEntry { text: Some(t), .. }) = self.entry(seq)? {
            return Ok(Some(t));
        }
        self.content_elsewhere(seq, h)
    }

    /// [`Engine::content_at`] for an entry already read without content in it.
    pub fn content_elsewhere(
        &self,
        seq: Seq,
        h: &Hash,
    ) -> Result<Option<sled::IVec>, StorageError> {
        if let Some(t) = self.text.get(seq.to_be_bytes())? {
            return Ok(Some(t));
        }
        Ok(self.content.get(h)?)
    }

    /// The legacy `text` entry at `seq`, if any.
    pub fn legacy_text(&self, seq: Seq) -> Result<Option<sled::IVec>, StorageError> {
        Ok(self.text.get(seq.to_be_bytes())?)
    }

    /// Number of legacy `text` entries.
    pub fn legacy_text_len(&self) -> usize {
        self.text.len()
    }

    /// Whether content `h` is stored.
    pub fn has_content(&self, h: &Hash) -> Result<bool, StorageError> {
        Ok(self.content.contains_key(h)?)
    }

    /// Iterates the content tree: (hash key, bytes).
    pub fn scan_content(
        &self,
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StorageError>> + '_ {
        self.content.iter().map(|kv| kv.map_err(StorageError::from))
    }

    /// A sink cursor.
    pub fn cursor(&self, name: &str) -> Result<Option<Seq>, StorageError> {
        self.cursors
            .get(name.as_bytes())?
            .map(|v| seq_of(&v))
            .transpose()
    }

    /// Sets a sink cursor, then flushes sled (`Tree::flush` writes out every tree): the
    /// cursor survives a process crash. No fdatasync follows, so it may not survive an
    /// OS crash or power loss (see [`crate::store::Store::set_cursor`]).
    pub fn set_cursor(&self, name: &str, seq: Seq) -> Result<(), StorageError> {
        self.cursors.insert(name.as_bytes(), &seq.to_be_bytes())?;
        self.cursors.flush()?;
        Ok(())
    }

    /// All cursors.
    pub fn cursors(&self) -> Result<Vec<(String, Seq)>, StorageError> {
        self.cursors
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), seq_of(&v)?))
            })
            .collect()
    }

    /// The store's identity.
    pub fn store_id(&self) -> Uuid {
        self.store_id
    }

    /// When the record `seq` (with its own time `own`) reached this store: the later of
    /// `own` and the last arrival mark at or before `seq`.
    pub fn arrival(
        &self,
        seq: Seq,
        own: crate::time::Timestamp,
    ) -> Result<crate::time::Timestamp, StorageError> {
        let mark = match self.arrivals.get_le(seq.to_be_bytes())? {
            Some((_, v)) => {
                let arr: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                    StorageError::Corrupt(format!("arrival mark of {} bytes", v.len()))
                })?;
                Some(crate::time::Timestamp(i64::from_be_bytes(arr)))
            }
            None => None,
        };
        Ok(mark.map_or(own, |m| m.max(own)))
    }

    /// Records a dead-lettered event of `sink`.
    pub fn put_dead_letter(&self, sink: &str, seq: Seq, error: &str) -> Result<(), StorageError> {
        self.dead.insert(dead_key(sink, seq), error.as_bytes())?;
        self.dead.flush()?;
        Ok(())
    }

    /// Unresolved dead letters of `sink`: (seq, error).
    pub fn dead_letters(&self, sink: &str) -> Result<Vec<(Seq, String)>, StorageError> {
        scan_dead(&self.dead, sink)
    }

    /// Acknowledged dead letters of `sink`: (seq, error and note).
    pub fn acked_dead_letters(&self, sink: &str) -> Result<Vec<(Seq, String)>, StorageError> {
        scan_dead(&self.dead_acked, sink)
    }

    /// Removes a dead letter of `sink` (its event reached the sink after all). False if
    /// there was none.
    pub fn remove_dead_letter(&self, sink: &str, seq: Seq) -> Result<bool, StorageError> {
        let gone = self.dead.remove(dead_key(sink, seq))?.is_some();
        self.dead.flush()?;
        Ok(gone)
    }

    /// Moves a dead letter of `sink` to the acknowledged ones, its error followed by
    /// `note`. False if there was none.
    pub fn ack_dead_letter(&self, sink: &str, seq: Seq, note: &str) -> Result<bool, StorageError> {
        let key = dead_key(sink, seq);
        let Some(error) = self.dead.get(&key)? else {
            return Ok(false);
        };
        let mut value = error.to_vec();
        value.extend_from_slice(b"\n");
        value.extend_from_slice(note.as_bytes());
        // Acknowledged first, then removed: a crash in between leaves it in both trees,
        // which reads as unresolved (the safe side) and acknowledging again finishes it.
        self.dead_acked.insert(&key, value)?;
        self.dead_acked.flush()?;
        self.dead.remove(&key)?;
        self.dead.flush()?;
        Ok(true)
    }
}

/// The identity in `meta`, created (a v7 UUID) and flushed on first open.
fn store_id(meta: &sled::Tree) -> Result<Uuid, StorageError> {
    if let Some(v) = meta.get(b"store_id")? {
        return Uuid::from_slice(&v).map_err(|e| StorageError::Corrupt(format!("store id: {e}")));
    }
    let id = Uuid::now_v7();
    meta.insert(b"store_id", id.as_bytes().as_slice())?;
    meta.flush()?;
    Ok(id)
}

/// Key of a dead letter: sink name ‖ 0 ‖ seq (u64 BE).
fn dead_key(sink: &str, seq: Seq) -> Vec<u8> {
    let mut k = sink.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The log's entries after a seq, in order, packs taken apart ([`Engine::scan`]).
struct Scan {
    keys: sled::Iter,
    values: Option<Values>,
    after: Seq,
    /// An error to answer first (finding where to start).
    failed: Option<StorageError>,
}

impl Iterator for Scan {
    type Item = Result<(Seq, LogEntry), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        loop {
            if let Some(values) = &mut self.values {
                match values.next() {
                    Some(Ok((seq, _))) if seq <= self.after => continue,
                    Some(Ok((seq, v))) => return Some(LogEntry::split(v).map(|e| (seq, e))),
                    Some(Err(e)) => return Some(Err(e)),
                    None => self.values = None,
                }
            }
            let (k, v) = match self.keys.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            match seq_of(&k) {
                Ok(key) => self.values = Some(Values::new(key, v)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The value of the log tree `log` that holds `seq` if it has it: the one under the
/// greatest key at or below it (see [`pack`]), with its key.
fn holder(log: &sled::Tree, seq: Seq) -> Result<Option<(Seq, Values)>, StorageError> {
    match log.get_le(seq.to_be_bytes())? {
        Some((k, v)) => {
            let key = seq_of(&k)?;
            Ok(Some((key, Values::new(key, v))))
        }
        None => Ok(None),
    }
}

/// The entry at `seq` in the log tree `log`, packed or not (see [`pack`]). Public for
/// tools and tests that open a store's sled database themselves.
pub fn log_entry(log: &sled::Tree, seq: Seq) -> Result<Option<LogEntry>, StorageError> {
    let Some((_, values)) = holder(log, seq)? else {
        return Ok(None);
    };
    values.find(seq)?.map(LogEntry::split).transpose()
}

/// Replaces the log value at `seq` in the log tree `log` with `value` (a value as
/// [`LogEntry::join`] makes it), in its pack if it is in one. For tests of tampering
/// and for repair tools; an error if the log has no value at `seq`.
pub fn replace_log_value(log: &sled::Tree, seq: Seq, value: &[u8]) -> Result<(), StorageError> {
    let missing = || StorageError::Corrupt(format!("no log value at seq {seq}"));
    let (key, values) = holder(log, seq)?.ok_or_else(missing)?;
    if !values.is_pack() {
        if key != seq {
            return Err(missing());
        }
        log.insert(key.to_be_bytes(), value)?;
        return Ok(());
    }
    let entries: Vec<(Seq, sled::IVec)> = values.collect::<Result<_, _>>()?;
    if !entries.iter().any(|(s, _)| *s == seq) {
        return Err(missing());
    }
    let mut buf = Vec::new();
    pack::encode(
        entries
            .iter()
            .map(|(s, v)| (*s, if *s == seq { value } else { v.as_ref() })),
        &mut buf,
    )?;
    log.insert(key.to_be_bytes(), buf)?;
    Ok(())
}

/// Entries of `sink` in a dead-letter tree: (seq, text).
fn scan_dead(tree: &sled::Tree, sink: &str) -> Result<Vec<(Seq, String)>, StorageError> {
    let mut prefix = sink.as_bytes().to_vec();
    prefix.push(0);
    tree.scan_prefix(&prefix)
        .map(|kv| {
            let (k, v) = kv?;
            Ok((
                seq_of(&k[prefix.len()..])?,
                String::from_utf8_lossy(&v).into_owned(),
            ))
        })
        .collect()
}

impl Engine {
    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Flushes everything (shutdown).
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        self.data_file.sync_data()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Fault tests of the commit protocol: the states a crash can leave between the
    //! two batches of a group (see the module docs), and the open of a store written
    //! by an earlier version (with `ids` and `wf` trees).

    use uuid::Uuid;

    use super::*;
    use crate::intent::{Intent, Meta, NewNode, NewWorkflow, Outcome};
    use crate::record::content_hash;
    use crate::store::{Store, StoreOptions};
    use crate::verify::verify_dir;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn create(store: &Store, id: Uuid) -> (Uuid, Seq) {
        let o = store
            .submit(
                Intent::CreateWorkflow(NewWorkflow {
                    id: Some(id),
                    system_prompt: "prompt".into(),
                    ..NewWorkflow::default()
                }),
                Meta::default(),
            )
            .await
            .unwrap();
        match o {
            Outcome::WorkflowCreated { root_id, seq, .. } => (root_id, seq),
            o => panic!("{o:?}"),
        }
    }

    /// Appends `nodes` to workflow `wf`.
    async fn append(
        store: &Store,
        wf: Uuid,
        nodes: Vec<NewNode>,
    ) -> Result<Outcome, crate::AppendError> {
        store
            .submit(
                Intent::AppendNodes {
                    workflow_id: wf,
                    nodes,
                },
                Meta::default(),
            )
            .await
    }

    /// sled writes any page over 128 KiB to a blob file of its own and never syncs it:
    /// a leaf of records with content of 20 KiB each (kept in the log values, under the
    /// blob threshold of a single value) is such a page when sled rewrites it whole.
    /// Every blob file is synced before a group is acknowledged, whatever wrote it.
    #[test]
    fn blob_files_of_rewritten_pages_are_synced_before_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let wf = Uuid::now_v7();
            let (root, _) = create(&store, wf).await;
            let mut parent = root;
            for i in 0..60 {
                let mut n = NewNode::new(parent, "message", format!("{i:05}").repeat(4000));
                let id = Uuid::now_v7();
                n.id = Some(id);
                append(&store, wf, vec![n]).await.unwrap();
                parent = id;
                let engine = store.engine();
                let on_disk = engine.blob_files().unwrap();
                let synced = engine.synced_blobs.lock().1.clone();
                assert!(
                    on_disk.is_subset(&synced),
                    "after append {i}: {:?} not synced",
                    on_disk.difference(&synced).collect::<Vec<_>>()
                );
            }
            assert!(
                !store.engine().blob_files().unwrap().is_empty(),
                "no page went to a blob file: the test proves nothing"
            );
            store.close().await;
        });
    }

    /// A closed and dropped store can be opened again at once, every time: the engine's
    /// drop waits for sled's threads to let go of the directory lock.
    #[test]
    fn a_dropped_store_can_be_reopened_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        for round in 1..=30u64 {
            rt.block_on(async {
                let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
                assert_eq!(store.head(), round - 1);
                create(&store, Uuid::now_v7()).await;
                store.close().await;
            });
        }
    }

    /// A handle that outlives the close on another thread (a sync worker's read that
    /// finishes after the worker stopped) keeps sled's lock a moment longer: opening
    /// again waits for it instead of failing. A lock held for good still fails, with
    /// sled's own message (the CLI turns it into "in use by another arbor process").
    #[test]
    fn open_waits_for_an_engine_still_closing_and_fails_on_one_in_use() {
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            create(&store, Uuid::now_v7()).await;
            let late = store.clone();
            store.close().await;
            drop(store);
            let (go, gone) = std::sync::mpsc::channel::<()>();
            let last = std::thread::spawn(move || {
                let _ = gone.recv();
                drop(late);
            });
            go.send(()).unwrap();
            let again = Store::open(dir.path(), StoreOptions::default())
                .expect("reopened while the last handle was being dropped elsewhere");
            assert_eq!(again.head(), 1);
            last.join().unwrap();
            let Err(e) = Store::open(dir.path(), StoreOptions::default()) else {
                panic!("a store in use was opened twice");
            };
            assert!(e.to_string().contains("could not acquire lock"), "{e}");
            again.close().await;
        });
    }

    /// A flush that fails (its fdatasync, say) poisons the store: the group's requests
    /// are answered with the error, never as appended; the index and the head stay where
    /// the last durable group left them; every later append is refused without being
    /// written; reads still answer. A restart rebuilds from the log: what was
    /// acknowledged is there, the chain verifies, and the failed append, sent again with
    /// its id, is accepted (appended or replayed, whichever the disk kept).
    #[test]
    fn a_failed_flush_poisons_the_store_until_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let wf = Uuid::now_v7();
        let (acked, failed, refused) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let root = rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let (root, _) = create(&store, wf).await;
            append(&store, wf, batch(root, &[acked])).await.unwrap();
            let head = store.head();

            let fail_sync = |on: bool| {
                let flag = &store.engine().fail_sync;
                flag.store(on, std::sync::atomic::Ordering::Release);
            };
            fail_sync(true);
            let flushes = store.flushes();
            let reason = poisoned(append(&store, wf, batch(acked, &[failed])).await);
            assert!(reason.contains("injected"), "{reason}");
            assert_eq!(store.flushes(), flushes, "a failed flush is not counted");
            let reason = store.poisoned().expect("the store says it is poisoned");
            assert!(reason.contains("injected fdatasync failure"), "{reason}");
            assert_eq!(store.head(), head, "the failed group is not published");
            assert!(store.node(&failed).unwrap().is_none());

            // Even once the disk would work again, nothing more is written until a
            // restart rebuilds the index from what is on disk.
            fail_sync(false);
            poisoned(append(&store, wf, batch(acked, &[refused])).await);
            assert_eq!(store.head(), head);
            assert!(store.node(&acked).unwrap().is_some(), "reads still answer");
            store.close().await;
            root
        });
        verify_dir(dir.path()).expect("the chain verifies after the failure");
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(store.poisoned(), None);
            assert!(store.node(&acked).unwrap().is_some());
            assert!(store.node(&refused).unwrap().is_none(), "never written");
            append(&store, wf, batch(acked, &[failed]))
                .await
                .expect("the failed append, sent again, is accepted");
            assert!(store.node(&failed).unwrap().is_some());
            assert!(store.node(&root).unwrap().is_some());
            store.close().await;
        });
        verify_dir(dir.path()).expect("the chain verifies after the restart");
    }

    /// Length of the chain the crash tests cut short: long enough that its group is
    /// written as several sled values (packs), which the tests check.
    const CUT: Seq = 40;

    /// A fresh directory and runtime, a workflow id, the id of its first node, and a
    /// chain of [`CUT`] nodes to cut short.
    fn cut_fixture() -> (
        tempfile::TempDir,
        tokio::runtime::Runtime,
        Uuid,
        Uuid,
        Vec<Uuid>,
    ) {
        let cut = (0..CUT).map(|_| Uuid::now_v7()).collect();
        (
            tempfile::tempdir().unwrap(),
            rt(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            cut,
        )
    }

    /// A workflow `wf` with one node `first` under its root; the head after it.
    async fn workflow_with(store: &Store, wf: Uuid, first: Uuid) -> Seq {
        let (root, _) = create(store, wf).await;
        append(store, wf, batch(root, &[first])).await.unwrap();
        store.head()
    }

    /// Appends the chain `ids` under `parent` and checks it was appended afresh (not
    /// replayed) right after `before`.
    async fn appended_afresh(store: &Store, wf: Uuid, parent: Uuid, ids: &[Uuid], before: Seq) {
        match append(store, wf, batch(parent, ids)).await.unwrap() {
            Outcome::Nodes { nodes, replayed } => {
                assert!(!replayed, "nothing of it was kept to replay");
                let seqs: Vec<Seq> = nodes.iter().map(|n| n.seq).collect();
                let expected: Vec<Seq> = (1..=ids.len() as Seq).map(|i| before + i).collect();
                assert_eq!(seqs, expected);
            }
            o => panic!("{o:?}"),
        }
    }

    /// The reason of a poisoned store's refusal; panics on anything else.
    fn poisoned(res: Result<Outcome, crate::AppendError>) -> String {
        match res {
            Err(crate::AppendError::Storage(StorageError::Poisoned(reason))) => reason,
            other => panic!("expected the poisoned store's refusal, got {other:?}"),
        }
    }

    /// A write that fails part-way through a group (sled refusing the third of its
    /// values, after two packs of its records, say) poisons the store: the request is answered with the error, nothing
    /// of it is published, later appends are refused. The records it did write have no
    /// commit mark, so the restart's open removes them: the request, sent again, is
    /// appended afresh at the same seqs, whole, and the chain verifies.
    #[test]
    fn a_failed_write_poisons_the_store_and_the_cut_group_goes_at_restart() {
        let (dir, rt, wf, first, cut) = cut_fixture();
        let before = rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let before = workflow_with(&store, wf, first).await;
            let fail_after = &store.engine().fail_write_after;
            fail_after.store(2, std::sync::atomic::Ordering::Release);
            let reason = poisoned(append(&store, wf, batch(first, &cut)).await);
            assert!(reason.contains("injected write failure"), "{reason}");
            fail_after.store(usize::MAX, std::sync::atomic::Ordering::Release);
            assert_eq!(store.head(), before, "nothing of the group is published");
            assert!(cut.iter().all(|id| store.seq_of(id).is_none()));
            poisoned(append(&store, wf, batch(first, &[Uuid::now_v7()])).await);
            store.close().await;
            before
        });
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(store.poisoned(), None);
            assert_eq!(store.head(), before, "the cut group is gone whole");
            appended_afresh(&store, wf, first, &cut, before).await;
            store.close().await;
        });
        assert_eq!(verify_dir(dir.path()).unwrap().events, before + CUT);
    }

    fn batch(parent: Uuid, ids: &[Uuid]) -> Vec<NewNode> {
        let mut parent = parent;
        ids.iter()
            .map(|id| {
                let mut n = NewNode::new(parent, "message", format!("node {id}"));
                n.id = Some(*id);
                parent = *id;
                n
            })
            .collect()
    }

    /// A store written by an earlier version, with the `ids` and `wf` trees it kept and
    /// all content under its hash: the open drops the trees, and after the restart the
    /// in-memory maps (rebuilt from the log) answer idempotent replays with the stored
    /// result (content read by hash) and list each workflow's events.
    #[test]
    fn open_drops_the_legacy_trees_and_replays_still_answer() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let (wf1, wf2) = (Uuid::now_v7(), Uuid::now_v7());
        let nodes: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let (root1, root2) = rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let (root1, _) = create(&store, wf1).await;
            append(&store, wf1, batch(root1, &nodes)).await.unwrap();
            let (root2, seq) = create(&store, wf2).await;
            assert_eq!(seq, 5);
            store.close().await;
            (root1, root2)
        });
        {
            // Dropped after `db`: waits for sled to let go of the directory.
            let _release = LockRelease {
                lock_file: dir.path().join("db"),
            };
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            for name in LEGACY_TREES {
                let t = db.open_tree(name).unwrap();
                t.insert(wf1.as_bytes(), &1u64.to_be_bytes()).unwrap();
            }
            // Those versions kept all content under its hash, none by seq.
            let (log, content) = (
                db.open_tree("log").unwrap(),
                db.open_tree("content").unwrap(),
            );
            move_content_out(&log, |_, text| {
                content
                    .insert(blake3::hash(&text).as_bytes(), text)
                    .unwrap();
            });
            assert_eq!(content.len(), 4, "one prompt, three nodes");
            db.flush().unwrap();
        }
        {
            let e = Engine::open(dir.path(), 8 << 20).unwrap();
            let names = e.db.tree_names();
            for name in LEGACY_TREES {
                assert!(
                    !names.iter().any(|n| n.as_ref() == name.as_bytes()),
                    "{name}"
                );
            }
        }
        let report = verify_dir(dir.path()).unwrap();
        assert_eq!(report.events, 5);
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(store.head(), 5);
            // Same id, same body: the stored result. Different body: a conflict.
            let again = append(&store, wf1, batch(root1, &nodes)).await.unwrap();
            match again {
                Outcome::Nodes {
                    nodes: got,
                    replayed,
                } => {
                    assert!(replayed);
                    assert_eq!(got.iter().map(|n| n.seq).collect::<Vec<_>>(), [2, 3, 4]);
                }
                o => panic!("{o:?}"),
            }
            let mut changed = batch(root1, &nodes);
            changed[2].content = "other".into();
            let refused = append(&store, wf1, changed).await;
            assert!(
                matches!(refused, Err(crate::AppendError::Conflict(_))),
                "{refused:?}"
            );
            assert_eq!(create(&store, wf2).await, (root2, 5));
            assert_eq!(
                store
                    .read_workflow_events(&wf2, 0, 10)
                    .unwrap()
                    .unwrap()
                    .len(),
                1
            );
            crate::verify::verify_store(&store).unwrap();
            store.close().await;
        });
    }

    /// Rewrites `log` as earlier versions wrote it: one key per event (packs taken
    /// apart), each value its plain record, the content handed to `put` (seq, content).
    fn move_content_out(log: &sled::Tree, mut put: impl FnMut(Seq, sled::IVec)) {
        let mut packs = 0;
        for kv in log.iter() {
            let (k, v) = kv.unwrap();
            let values = Values::new(seq_of(&k).unwrap(), v);
            packs += usize::from(values.is_pack());
            log.remove(&k).unwrap();
            for value in values {
                let (seq, value) = value.unwrap();
                let entry = LogEntry::split(value).unwrap();
                if let Some(text) = entry.text {
                    put(seq, text);
                }
                log.insert(seq.to_be_bytes(), entry.record).unwrap();
            }
        }
        assert!(
            packs > 0,
            "nothing was packed: the old layout is not tested"
        );
    }

    /// A store of the version that kept content in the `text` tree (by seq) reads its
    /// content from there, verifies, catches tampering there, and keeps new content in
    /// the log values beside it.
    #[test]
    fn content_in_the_legacy_text_tree_still_reads_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let wf = Uuid::now_v7();
        let nodes: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let root = rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let (root, _) = create(&store, wf).await;
            append(&store, wf, batch(root, &nodes)).await.unwrap();
            store.close().await;
            root
        });
        {
            let e = Engine::open(dir.path(), 8 << 20).unwrap();
            assert_eq!(e.legacy_text_len(), 0, "new content is kept in the log");
            move_content_out(&e.log, |seq, text| {
                e.text.insert(seq.to_be_bytes(), text).unwrap();
            });
            assert_eq!(e.legacy_text_len(), 4, "one prompt, three nodes");
            e.flush().unwrap();
        }
        assert_eq!(verify_dir(dir.path()).unwrap().content_blobs, 4);
        let more: Vec<Uuid> = (0..2).map(|_| Uuid::now_v7()).collect();
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            for id in &nodes {
                let n = store.node_from_disk(store.seq_of(id).unwrap()).unwrap();
                assert_eq!(n.content, format!("node {id}"));
            }
            let events = store.read_events(0, 10).unwrap();
            assert_eq!(events.len(), 4);
            append(&store, wf, batch(root, &more)).await.unwrap();
            for id in &more {
                let n = store.node_from_disk(store.seq_of(id).unwrap()).unwrap();
                assert_eq!(n.content, format!("node {id}"));
            }
            crate::verify::verify_store(&store).unwrap();
            assert_eq!(store.engine().legacy_text_len(), 4);
            store.close().await;
        });
        {
            let e = Engine::open(dir.path(), 8 << 20).unwrap();
            e.text
                .insert(2u64.to_be_bytes(), "tampered".as_bytes())
                .unwrap();
            e.flush().unwrap();
        }
        let err = verify_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("seq 2") && err.contains("does not hash"),
            "{err}"
        );
    }

    /// A crash between a group's records and its commit mark: the open removes the
    /// whole group (a request of many nodes, written as several packs, is in the log
    /// whole or not at all), keeps
    /// everything before it, and the same request sent again is appended afresh at
    /// the same seqs, not answered as a replay of records that are gone.
    #[test]
    fn a_group_a_crash_cut_short_is_removed_whole_at_open() {
        let (dir, rt, wf, first, cut) = cut_fixture();
        let before = rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let before = workflow_with(&store, wf, first).await;
            append(&store, wf, batch(first, &cut)).await.unwrap();
            assert_eq!(store.head(), before + CUT);
            store.close().await;
            before
        });
        {
            // What the disk holds if the crash came after the records, before the mark.
            let e = Engine::open(dir.path(), 8 << 20).unwrap();
            assert_eq!(e.committed().unwrap(), Some(before + CUT));
            let values = e.log.range((before + 1).to_be_bytes()..).count();
            assert!(values >= 3, "the group is {values} sled values");
            e.meta.insert(COMMITTED, &before.to_be_bytes()).unwrap();
            e.make_durable().unwrap();
        }
        {
            let e = Engine::open(dir.path(), 8 << 20).unwrap();
            assert_eq!(e.committed().unwrap(), Some(before));
            assert_eq!(
                e.scan(0).count() as u64,
                before,
                "the cut group is gone whole"
            );
        }
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(store.head(), before);
            assert!(store.seq_of(&first).is_some());
            assert!(cut.iter().all(|id| store.seq_of(id).is_none()));
            appended_afresh(&store, wf, first, &cut, before).await;
            crate::verify::verify_store(&store).unwrap();
            store.close().await;
        });
        assert_eq!(verify_dir(dir.path()).unwrap().events, before + CUT);
    }

    /// Groups of every size, with content small, over a pack's size and over the blob
    /// threshold: every event is found by seq and every scan starts where it is asked
    /// to (inside a pack too), before and after a reopen.
    #[test]
    fn every_event_is_found_by_seq_and_by_scan_in_packs_and_plain_values() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let wf = Uuid::now_v7();
        let head = rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let (mut parent, _) = create(&store, wf).await;
            for (n, size) in [
                (1, 10),
                (2, 10),
                (17, 300),
                (40, 50),
                (3, 7000),
                (2, 40_000),
            ] {
                let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
                let mut nodes = batch(parent, &ids);
                for node in &mut nodes {
                    node.content = "c".repeat(size);
                }
                append(&store, wf, nodes).await.unwrap();
                parent = *ids.last().unwrap();
            }
            let head = store.head();
            store.close().await;
            head
        });
        assert_eq!(head, 1 + 1 + 2 + 17 + 40 + 3 + 2);
        for _ in 0..2 {
            let e = Engine::open(dir.path(), 8 << 20).unwrap();
            let packs = e
                .log
                .iter()
                .filter(|kv| kv.as_ref().unwrap().1.first() == Some(&pack::PACK))
                .count();
            assert!(packs >= 3 && e.log.len() < head as usize, "{packs} packs");
            for seq in 1..=head {
                let entry = e.entry(seq).unwrap().unwrap();
                assert_eq!(Record::decode(&entry.record).unwrap().seq, seq);
            }
            assert!(e.entry(0).unwrap().is_none());
            assert!(e.entry(head + 1).unwrap().is_none());
            for after in 0..=head + 1 {
                let seqs: Vec<Seq> = e.scan(after).map(|kv| kv.unwrap().0).collect();
                assert_eq!(
                    seqs,
                    (after + 1..=head).collect::<Vec<_>>(),
                    "after {after}"
                );
            }
            assert_eq!(e.last_record().unwrap().unwrap().seq, head);
        }
        assert_eq!(verify_dir(dir.path()).unwrap().events, head);
    }

    /// A commit mark inside a pack (no writer makes one: a pack never spans two groups)
    /// cuts the pack at the mark: what is at or below it stays and verifies, the rest
    /// goes with the later values, and the log goes on from the mark.
    #[test]
    fn a_pack_across_the_commit_mark_is_cut_at_the_mark() {
        let (dir, rt, wf, first, cut) = cut_fixture();
        let before = rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let before = workflow_with(&store, wf, first).await;
            append(&store, wf, batch(first, &cut)).await.unwrap();
            store.close().await;
            before
        });
        let mark = before + 5;
        {
            let e = Engine::open(dir.path(), 8 << 20).unwrap();
            let (key, values) = e.holder(mark).unwrap().unwrap();
            assert!(values.is_pack() && key <= mark);
            assert!(
                e.holder(mark + 1).unwrap().unwrap().0 == key,
                "one pack holds both"
            );
            e.meta.insert(COMMITTED, &mark.to_be_bytes()).unwrap();
            e.make_durable().unwrap();
        }
        {
            let e = Engine::open(dir.path(), 8 << 20).unwrap();
            let seqs: Vec<Seq> = e.scan(0).map(|kv| kv.unwrap().0).collect();
            assert_eq!(seqs, (1..=mark).collect::<Vec<_>>());
            assert!(e.entry(mark + 1).unwrap().is_none());
            assert_eq!(e.last_record().unwrap().unwrap().seq, mark);
        }
        assert_eq!(verify_dir(dir.path()).unwrap().events, mark);
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(store.head(), mark);
            let kept = cut[..5].to_vec();
            let rest = cut[5..].to_vec();
            assert!(kept.iter().all(|id| store.seq_of(id).is_some()));
            appended_afresh(&store, wf, cut[4], &rest, mark).await;
            crate::verify::verify_store(&store).unwrap();
            store.close().await;
        });
    }

    /// A store written before the commit mark (each group one atomic batch) has none:
    /// the open keeps its whole log and marks its last seq.
    #[test]
    fn a_store_without_a_commit_mark_keeps_its_log_and_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let wf = Uuid::now_v7();
        let nodes: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let (root, _) = create(&store, wf).await;
            append(&store, wf, batch(root, &nodes)).await.unwrap();
            store.close().await;
        });
        {
            let e = Engine::open(dir.path(), 8 << 20).unwrap();
            e.meta.remove(COMMITTED).unwrap();
            e.make_durable().unwrap();
        }
        let e = Engine::open(dir.path(), 8 << 20).unwrap();
        assert_eq!(e.committed().unwrap(), Some(5), "one root and four nodes");
        assert_eq!(e.scan(0).count(), 5);
    }

    /// A log value's frame: a cut or inconsistent one is an error, never a panic or a
    /// record read from the wrong bytes.
    #[test]
    fn log_values_split_and_refuse_a_bad_frame() {
        let framed = LogEntry::join(b"record", Some(b"text")).unwrap();
        let e = LogEntry::split(framed.clone().into()).unwrap();
        assert_eq!(
            (&e.record[..], e.text.as_deref()),
            (&b"record"[..], Some(&b"text"[..]))
        );
        let plain = LogEntry::split(sled::IVec::from(&b"\x98plain"[..])).unwrap();
        assert!(plain.text.is_none());
        for cut in 0..FRAME_HEADER + 6 {
            let res = LogEntry::split(framed[..cut].into());
            match cut {
                0 => assert!(res.unwrap().text.is_none()),
                _ => assert!(res.is_err(), "cut at {cut}"),
            }
        }
        let empty_text = LogEntry::split(framed[..FRAME_HEADER + 6].into()).unwrap();
        assert_eq!(empty_text.text.as_deref(), Some(&b""[..]));
    }

    /// The writer validates and writes a group while the syncer makes the one before it
    /// durable. Requests that name nodes not answered yet (client-chosen ids, sent
    /// without waiting: a chain where each node is the next one's parent, and each
    /// request sent twice) are validated against the groups still in flight: every one
    /// is accepted or replayed, none refused, and no answer arrives before its event is
    /// durable and in the index (the head has reached it). After a restart the log holds
    /// exactly the chain, once.
    #[test]
    fn requests_on_groups_still_in_flight_are_accepted_and_answered_only_when_durable() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let wf = Uuid::now_v7();
        // 2 × 120 requests fit the writer's queue (4 × `max_group`), so each is queued
        // as it is first polled, in order (a send that had to wait for room could be
        // overtaken by a later one).
        let ids: Vec<Uuid> = (0..120).map(|_| Uuid::now_v7()).collect();
        let groups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = groups.clone();
        let options = StoreOptions {
            on_group: Some(std::sync::Arc::new(move |_| {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })),
            max_group: 64,
            ..StoreOptions::default()
        };
        rt.block_on(async {
            let store = Store::open(dir.path(), options).unwrap();
            let (root, _) = create(&store, wf).await;
            let mut parent = root;
            let mut sends = Vec::new();
            for id in &ids {
                let mut n = NewNode::new(parent, "message", format!("node {id}"));
                n.id = Some(*id);
                parent = *id;
                for _ in 0..2 {
                    let store = store.clone();
                    let n = n.clone();
                    sends.push(async move {
                        let o = append(&store, wf, vec![n]).await;
                        (o, store.head())
                    });
                }
            }
            // `join_all` polls them in order, and without tokio's budget (which would make
            // some wait a turn) each reaches the writer's queue on its first poll.
            let answers = tokio::task::unconstrained(futures_util::future::join_all(sends)).await;
            let mut replayed = 0;
            for (o, head_then) in answers {
                match o {
                    Ok(Outcome::Nodes { nodes, replayed: r }) => {
                        assert!(nodes[0].seq <= head_then, "answered before durable");
                        replayed += usize::from(r);
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(replayed, ids.len(), "each second send is a replay");
            assert!(groups.load(std::sync::atomic::Ordering::Relaxed) > 2);
            store.close().await;
        });
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(store.head(), 1 + ids.len() as u64);
            let last = ids.last().unwrap();
            let path = store.path(last).unwrap().unwrap();
            assert_eq!(path.len(), 1 + ids.len());
            crate::verify::verify_store(&store).unwrap();
            store.close().await;
        });
    }

    /// Ids are unique across the log, now checked against the in-memory maps: a node
    /// whose client-chosen id is a future edge's derived event id makes that edge a
    /// conflict, a status change reusing any id (alone or with another in the same
    /// group) is a conflict, and none of it stops the store from taking writes.
    #[test]
    fn reused_event_ids_are_conflicts_and_do_not_poison_the_store() {
        use crate::intent::edge_event_id;
        use crate::model::{Edge, EdgeKind, WorkflowStatus};
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let wf = Uuid::now_v7();
            let (root, _) = create(&store, wf).await;
            let monitor = Uuid::now_v7();
            let mut m = NewNode::new(root, "monitor", "watch");
            m.id = Some(monitor);
            let squatter = edge_event_id(EdgeKind::Monitors, monitor, root);
            let mut n = NewNode::new(root, "message", "took the edge's id");
            n.id = Some(squatter);
            append(&store, wf, vec![m, n]).await.unwrap();
            let edge = Intent::AddEdge {
                workflow_id: wf,
                edge: Edge {
                    kind: EdgeKind::Monitors,
                    from: monitor,
                    to: root,
                },
            };
            let refused = store.submit(edge, Meta::default()).await;
            assert!(
                matches!(refused, Err(crate::AppendError::Conflict(_))),
                "{refused:?}"
            );
            let status = |to, id| {
                let meta = Meta {
                    event_id: Some(id),
                    ..Meta::default()
                };
                store.submit(
                    Intent::SetStatus {
                        workflow_id: wf,
                        status: to,
                    },
                    meta,
                )
            };
            let taken = status(WorkflowStatus::Waiting, squatter).await;
            assert!(
                matches!(taken, Err(crate::AppendError::Conflict(_))),
                "{taken:?}"
            );
            // Two changes with one id, submitted together (one group or two): one is
            // taken, the other refused, whichever the writer sees first.
            let id = Uuid::now_v7();
            let (a, b) = tokio::join!(
                status(WorkflowStatus::Waiting, id),
                status(WorkflowStatus::Completed, id)
            );
            let conflict = |r: &Result<Outcome, crate::AppendError>| {
                matches!(r, Err(crate::AppendError::Conflict(_)))
            };
            assert!(
                (a.is_ok() && conflict(&b)) || (conflict(&a) && b.is_ok()),
                "{a:?} {b:?}"
            );
            let head = store.head();
            create(&store, Uuid::now_v7()).await;
            assert_eq!(store.head(), head + 1);
            crate::verify::verify_store(&store).unwrap();
            store.close().await;
        });
        verify_dir(dir.path()).unwrap();
    }

    /// A crash after a group's content batches but before its log batch leaves content
    /// no record references: a large blob (harmless, content-addressed) and `text`
    /// entries above the log's end, which the open removes — the seqs they sit at go
    /// to other records, here a node with large content and an edge, which write no
    /// `text` entry of their own. Verify passes, every node reads its own content, and
    /// the blob's content can be appended later.
    #[test]
    fn orphan_content_of_an_unwritten_group_is_harmless() {
        use crate::model::{Edge, EdgeKind};
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let wf = Uuid::now_v7();
        let root = rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let (root, _) = create(&store, wf).await;
            store.close().await;
            root
        });
        let big = "x".repeat(BLOB_CANDIDATE_BYTES + 10);
        {
            let e = Engine::open(dir.path(), 8 << 20).unwrap();
            let text = "written before a crash";
            e.content
                .insert(content_hash(text), text.as_bytes())
                .unwrap();
            for seq in [2u64, 3, 4] {
                e.text
                    .insert(seq.to_be_bytes(), "stale".as_bytes())
                    .unwrap();
            }
            e.flush().unwrap();
        }
        assert_eq!(verify_dir(dir.path()).unwrap().events, 1);
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(
                store.engine().legacy_text_len(),
                0,
                "the orphans are gone; the root's content is in its log value"
            );
            let (monitor, small) = (Uuid::now_v7(), Uuid::now_v7());
            let mut m = NewNode::new(root, "monitor", big.clone());
            m.id = Some(monitor);
            append(&store, wf, vec![m]).await.unwrap();
            let edge = Intent::AddEdge {
                workflow_id: wf,
                edge: Edge {
                    kind: EdgeKind::Monitors,
                    from: monitor,
                    to: root,
                },
            };
            store.submit(edge, Meta::default()).await.unwrap();
            let mut n = NewNode::new(root, "message", "written before a crash");
            n.id = Some(small);
            append(&store, wf, vec![n]).await.unwrap();
            assert_eq!(store.head(), 4);
            assert_eq!(store.node(&monitor).unwrap().unwrap().node.content, big);
            assert_eq!(
                store.node(&small).unwrap().unwrap().node.content,
                "written before a crash"
            );
            crate::verify::verify_store(&store).unwrap();
            store.close().await;
        });
        let report = verify_dir(dir.path()).unwrap();
        assert_eq!(report.events, 4);
        // Root and the small node by seq, the large one and the orphan by hash.
        assert_eq!(report.content_blobs, 4);
    }
}
