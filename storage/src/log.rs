//! The sled layer: the only module that knows sled. It owns the trees of DESIGN §3
//! and the durable-flush protocol.
//!
//! Trees:
//! - `log`: seq (u64 BE) → rmp [`Record`]: the source of truth.
//! - `ids`: event or node id (16 bytes) → seq (u64 BE) of the event that introduced it.
//! - `wf`: workflow id (16 bytes) ‖ seq (u64 BE) → empty: a workflow's events in order.
//!   (DESIGN names a per-workflow seq as key; the global seq orders the same way and
//!   is what replay and SSE positions are expressed in, so it is used directly.)
//! - `content`: BLAKE3 (32 bytes) → UTF-8 bytes, written once per distinct content.
//! - `cursors`: sink name → seq (u64 BE).
//! - `dead`: sink name ‖ 0 ‖ seq (u64 BE) → error text, for poison events not resolved.
//! - `arrivals`: seq (u64 BE) → time (µs, i64 BE): when a group holding records older than
//!   their arrival (imports keep their original time) was written, keyed by its first seq.
//!   The arrival of an event is the later of its own time and the last mark at or
//!   before its seq (see [`Engine::arrival`]).
//! - `meta`: `store_id` → 16 bytes: the store's identity, created with it.
//! - `dead_acked`: same key → error text and acknowledgement note: dead letters an
//!   operator accepted as lost (`arbor sync dead-letters ack`).
//!
//! Commit protocol: one group = three single-tree batches ([`sled::Tree::apply_batch`]),
//! in this order (see [`Engine::write_group`]):
//! 1. `content`: the group's new blobs (content-addressed, so writing one twice or
//!    leaving one unreferenced is harmless);
//! 2. `log`: the group's records, **the commit point**;
//! 3. `ids` then `wf`: the secondary entries, derived from the records.
//!
//! then [`Engine::make_durable`]: `Db::flush` (which on Linux only issues
//! `sync_file_range`, sled issue #1452), followed by `fdatasync` of sled's data file and
//! of any new blob files (sled writes values over its blob threshold to separate files
//! and never syncs them).
//!
//! Why this is crash-safe without a multi-tree transaction (which costs an extra tree
//! lookup per key and about a third of the writer's time): sled recovers each batch
//! whole or not at all, and recovers a *prefix* of its write-ahead log (recovery stops
//! at the first torn batch, `LogIter`). So after a crash:
//! - a recovered log record has its content (written before it);
//! - only the tail of the log (the last group written) may lack its `ids`/`wf`
//!   entries, and never has entries beyond it (they are written after the records).
//!
//! [`Engine::open`] repairs that tail ([`Engine::repair_tail`]): walking back from the
//! last record, it re-derives the missing `ids`/`wf` entries from the log until it meets
//! a record whose entries are all present (every earlier record has them too, by the
//! prefix property), then makes the repair durable. Acknowledged appends are untouched:
//! with `fsync` durability a group is acknowledged only after all three batches are
//! durable.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use sled::Batch;
use uuid::Uuid;

use crate::error::StorageError;
use crate::model::Seq;
use crate::record::{Hash, Record, RecordBody};

/// Values at least this large may have gone to a sled blob file.
const BLOB_CANDIDATE_BYTES: usize = 32 * 1024;

/// The open sled database and its trees.
pub struct Engine {
    db: sled::Db,
    log: sled::Tree,
    ids: sled::Tree,
    wf: sled::Tree,
    content: sled::Tree,
    cursors: sled::Tree,
    dead: sled::Tree,
    /// The admin log (token events), seq → encoded [`crate::admin::AdminEvent`].
    admin: sled::Tree,
    dead_acked: sled::Tree,
    arrivals: sled::Tree,
    /// The store's identity (the `meta` tree's `store_id`).
    store_id: Uuid,
    /// sled's main data file, fdatasync'd after each flush.
    data_file: File,
    blob_dir: PathBuf,
    /// Blob files already synced.
    synced_blobs: parking_lot::Mutex<HashSet<PathBuf>>,
    /// Declared last so that it drops last: waits for sled to let go of the directory.
    _release: LockRelease,
}

/// How long a dropped [`Engine`] waits for sled to release the directory lock.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
        let Ok(file) = File::open(&self.lock_file) else {
            return;
        };
        let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
        loop {
            match fs2::FileExt::try_lock_exclusive(&file) {
                Ok(()) => {
                    let _ = fs2::FileExt::unlock(&file);
                    return;
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(e) => {
                    tracing::warn!(file = %self.lock_file.display(), error = %e, "sled kept its lock after close");
                    return;
                }
            }
        }
    }
}

/// Everything one group writes.
#[derive(Default)]
pub struct GroupWrite {
    /// Encoded records with their seqs.
    pub records: Vec<(Seq, Vec<u8>)>,
    /// New id → seq entries.
    pub ids: Vec<(Uuid, Seq)>,
    /// (workflow, seq) entries.
    pub wf: Vec<(Uuid, Seq)>,
    /// New content blobs.
    pub content: Vec<(Hash, Vec<u8>)>,
    /// An arrival mark (first seq, now) when the group holds records older than now.
    pub arrival: Option<(Seq, crate::time::Timestamp)>,
}

fn wf_key(wf: &Uuid, seq: Seq) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(wf.as_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
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
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        let data_file = File::open(dir.join("db"))?;
        let mut e = Engine {
            log: db.open_tree("log")?,
            ids: db.open_tree("ids")?,
            wf: db.open_tree("wf")?,
            content: db.open_tree("content")?,
            cursors: db.open_tree("cursors")?,
            dead: db.open_tree("dead")?,
            admin: db.open_tree("admin")?,
            dead_acked: db.open_tree("dead_acked")?,
            arrivals: db.open_tree("arrivals")?,
            store_id: store_id(&db.open_tree("meta")?)?,
            db,
            data_file,
            blob_dir: dir.join("blobs"),
            synced_blobs: parking_lot::Mutex::new(HashSet::new()),
            _release: LockRelease {
                lock_file: dir.join("db"),
            },
        };
        *e.synced_blobs.get_mut() = e.blob_files()?;
        let repaired = e.repair_tail()?;
        if repaired > 0 {
            tracing::warn!(
                records = repaired,
                "re-derived missing ids/wf entries of the log tail (interrupted group)"
            );
            e.make_durable(false)?;
        }
        Ok(e)
    }

    /// Re-derives the `ids`/`wf` entries of the log's tail that a crash between the
    /// log batch and the secondary batches left out (see the module docs). Returns the
    /// number of records repaired.
    pub fn repair_tail(&self) -> Result<usize, StorageError> {
        let mut ids = Batch::default();
        let mut wf = Batch::default();
        let mut repaired = 0usize;
        for kv in self.log.iter().rev() {
            let (k, v) = kv?;
            let seq = seq_of(&k)?;
            let r = Record::decode(&v)?;
            let mut introduced = vec![r.id];
            if let RecordBody::WorkflowCreated { root, .. } = &r.body {
                introduced.push(root.id);
            }
            let mut complete = true;
            for id in &introduced {
                match self.id_seq(id)? {
                    Some(s) if s == seq => {}
                    Some(s) => {
                        return Err(StorageError::Corrupt(format!(
                            "ids: {id} maps to seq {s}, log has it at {seq}"
                        )))
                    }
                    None => {
                        complete = false;
                        ids.insert(id.as_bytes(), &seq.to_be_bytes());
                    }
                }
            }
            let key = wf_key(&r.workflow_id, seq);
            if !self.wf.contains_key(key)? {
                complete = false;
                wf.insert(&key, &[]);
            }
            if complete {
                break;
            }
            repaired += 1;
        }
        if repaired > 0 {
            self.ids.apply_batch(ids)?;
            self.wf.apply_batch(wf)?;
        }
        Ok(repaired)
    }

    fn blob_files(&self) -> Result<HashSet<PathBuf>, StorageError> {
        match std::fs::read_dir(&self.blob_dir) {
            Ok(rd) => Ok(rd.filter_map(|e| e.ok().map(|e| e.path())).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes one group (not yet durable): content, then the log records (the commit
    /// point), then the `ids` and `wf` entries, each tree in one atomic batch. See the
    /// module docs for why a crash between them is repaired at open.
    pub fn write_group(&self, g: &GroupWrite) -> Result<(), StorageError> {
        if !g.content.is_empty() {
            let mut content = Batch::default();
            for (h, bytes) in &g.content {
                content.insert(h, bytes.as_slice());
            }
            self.content.apply_batch(content)?;
        }
        if let Some((seq, at)) = g.arrival {
            // Before the records: a mark without its records (a crash in between) is
            // harmless, it is older than anything written at that seq later.
            self.arrivals
                .insert(seq.to_be_bytes(), &at.micros().to_be_bytes())?;
        }
        let mut log = Batch::default();
        for (seq, bytes) in &g.records {
            log.insert(&seq.to_be_bytes(), bytes.as_slice());
        }
        self.log.apply_batch(log)?;
        let mut ids = Batch::default();
        for (id, seq) in &g.ids {
            ids.insert(id.as_bytes(), &seq.to_be_bytes());
        }
        self.ids.apply_batch(ids)?;
        let mut wf = Batch::default();
        for (w, seq) in &g.wf {
            wf.insert(&wf_key(w, *seq), &[]);
        }
        self.wf.apply_batch(wf)?;
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

    /// Makes everything written so far durable (see the module docs).
    pub fn make_durable(&self, may_have_blobs: bool) -> Result<(), StorageError> {
        self.db.flush()?;
        self.data_file.sync_data()?;
        if may_have_blobs {
            let now = self.blob_files()?;
            let mut synced = self.synced_blobs.lock();
            let mut synced_any = false;
            for path in now.difference(&synced) {
                File::open(path)?.sync_data()?;
                synced_any = true;
            }
            if synced_any {
                File::open(&self.blob_dir)?.sync_all()?;
            }
            *synced = now;
        }
        Ok(())
    }

    /// Whether a group of this value size may write blob files.
    pub fn is_blob_candidate(len: usize) -> bool {
        len >= BLOB_CANDIDATE_BYTES
    }

    /// The record at `seq`.
    pub fn record(&self, seq: Seq) -> Result<Option<Record>, StorageError> {
        match self.log.get(seq.to_be_bytes())? {
            Some(v) => Record::decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// The last record of the log.
    pub fn last_record(&self) -> Result<Option<Record>, StorageError> {
        match self.log.last()? {
            Some((_, v)) => Record::decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Iterates the raw log from `after + 1`: (seq, encoded record).
    pub fn scan(
        &self,
        after: Seq,
    ) -> impl Iterator<Item = Result<(Seq, sled::IVec), StorageError>> + '_ {
        self.log.range((after + 1).to_be_bytes()..).map(|kv| {
            let (k, v) = kv?;
            Ok((seq_of(&k)?, v))
        })
    }

    /// Seqs of workflow `wf`'s events after `after`, at most `limit`, none above `max`.
    pub fn workflow_seqs(
        &self,
        wf: &Uuid,
        after: Seq,
        max: Seq,
        limit: usize,
    ) -> Result<Vec<Seq>, StorageError> {
        let start = wf_key(wf, after.saturating_add(1));
        let end = wf_key(wf, max);
        let mut out = Vec::new();
        if after >= max {
            return Ok(out);
        }
        for kv in self.wf.range(start..=end).take(limit) {
            let (k, _) = kv?;
            out.push(seq_of(&k[16..])?);
        }
        Ok(out)
    }

    /// Iterates the whole `wf` tree: (workflow, seq).
    pub fn scan_wf(&self) -> impl Iterator<Item = Result<(Uuid, Seq), StorageError>> + '_ {
        self.wf.iter().map(|kv| {
            let (k, _) = kv?;
            if k.len() != 24 {
                return Err(StorageError::Corrupt(format!(
                    "wf key of {} bytes",
                    k.len()
                )));
            }
            let id =
                Uuid::from_slice(&k[..16]).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            Ok((id, seq_of(&k[16..])?))
        })
    }

    /// The seq recorded for id `id`.
    pub fn id_seq(&self, id: &Uuid) -> Result<Option<Seq>, StorageError> {
        self.ids.get(id.as_bytes())?.map(|v| seq_of(&v)).transpose()
    }

    /// Number of entries in the ids tree.
    pub fn ids_len(&self) -> usize {
        self.ids.len()
    }

    /// The content with hash `h`.
    pub fn content(&self, h: &Hash) -> Result<Option<sled::IVec>, StorageError> {
        Ok(self.content.get(h)?)
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
        let mark = match self.arrivals.range(..=seq.to_be_bytes()).next_back() {
            Some(kv) => {
                let (_, v) = kv?;
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
    //! three batches of a group (see the module docs), and the repair at open.

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

    /// A crash after a group's log batch but before (or during) its `ids`/`wf` batches:
    /// the open repairs the tail, verify passes, and idempotent replays still answer
    /// with the stored result.
    #[test]
    fn open_repairs_secondary_entries_of_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let (wf1, wf2) = (Uuid::now_v7(), Uuid::now_v7());
        let nodes: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let (root1, root2) = rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let (root1, _) = create(&store, wf1).await;
            store
                .submit(
                    Intent::AppendNodes {
                        workflow_id: wf1,
                        nodes: batch(root1, &nodes),
                    },
                    Meta::default(),
                )
                .await
                .unwrap();
            let (root2, seq) = create(&store, wf2).await;
            assert_eq!(seq, 5);
            store.close().await;
            (root1, root2)
        });
        // Simulate the crash: seq 5 (workflow 2) lost both its ids entries and its wf
        // entry, seq 4 (the batch's last node) its wf entry only.
        {
            let e = Engine::open(dir.path(), 8 << 20).unwrap();
            e.ids.remove(wf2.as_bytes()).unwrap();
            e.ids.remove(root2.as_bytes()).unwrap();
            e.wf.remove(wf_key(&wf2, 5)).unwrap();
            e.wf.remove(wf_key(&wf1, 4)).unwrap();
            assert_eq!(e.repair_tail().unwrap(), 2);
            assert_eq!(e.id_seq(&wf2).unwrap(), Some(5));
            assert_eq!(e.id_seq(&root2).unwrap(), Some(5));
            assert_eq!(e.workflow_seqs(&wf1, 0, 5, 10).unwrap(), vec![1, 2, 3, 4]);
            assert_eq!(e.workflow_seqs(&wf2, 0, 5, 10).unwrap(), vec![5]);
            assert_eq!(e.repair_tail().unwrap(), 0);
            // Break it again and let `Engine::open` (as `Store::open` and verify do) repair.
            e.ids.remove(root2.as_bytes()).unwrap();
            e.wf.remove(wf_key(&wf2, 5)).unwrap();
            e.flush().unwrap();
        }
        let report = verify_dir(dir.path()).unwrap();
        assert_eq!(report.events, 5);
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            assert_eq!(store.head(), 5);
            // Same id, same body: the stored result. Different body: a conflict.
            let again = store
                .submit(
                    Intent::AppendNodes {
                        workflow_id: wf1,
                        nodes: batch(root1, &nodes),
                    },
                    Meta::default(),
                )
                .await
                .unwrap();
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
            let refused = store
                .submit(
                    Intent::AppendNodes {
                        workflow_id: wf1,
                        nodes: changed,
                    },
                    Meta::default(),
                )
                .await;
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

    /// A crash after a group's content batch but before its log batch leaves only
    /// unreferenced content: verify passes and the same content can be appended later.
    #[test]
    fn orphan_content_of_an_unwritten_group_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let wf = Uuid::now_v7();
        let root = rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let (root, _) = create(&store, wf).await;
            store.close().await;
            root
        });
        {
            let e = Engine::open(dir.path(), 8 << 20).unwrap();
            let text = "written before a crash";
            e.content
                .insert(content_hash(text), text.as_bytes())
                .unwrap();
            e.flush().unwrap();
        }
        assert_eq!(verify_dir(dir.path()).unwrap().events, 1);
        rt.block_on(async {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let id = Uuid::now_v7();
            let mut n = NewNode::new(root, "message", "written before a crash");
            n.id = Some(id);
            store
                .submit(
                    Intent::AppendNodes {
                        workflow_id: wf,
                        nodes: vec![n],
                    },
                    Meta::default(),
                )
                .await
                .unwrap();
            assert_eq!(
                store.node(&id).unwrap().unwrap().node.content,
                "written before a crash"
            );
            crate::verify::verify_store(&store).unwrap();
            store.close().await;
        });
    }
}
