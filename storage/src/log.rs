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
//! - `dead`: sink name ‖ 0 ‖ seq (u64 BE) → error text, for poison events.
//!
//! Durability: one group = one multi-tree sled transaction, then [`Engine::make_durable`]:
//! `Db::flush` (which on Linux only issues `sync_file_range`, sled issue #1452),
//! followed by `fdatasync` of sled's data file and of any new blob files (sled writes
//! values over its blob threshold to separate files and never syncs them).

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Batch, Transactional};
use uuid::Uuid;

use crate::error::StorageError;
use crate::model::Seq;
use crate::record::{Hash, Record};

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
    /// sled's main data file, fdatasync'd after each flush.
    data_file: File,
    blob_dir: PathBuf,
    /// Blob files already synced.
    synced_blobs: parking_lot::Mutex<HashSet<PathBuf>>,
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
            db,
            data_file,
            blob_dir: dir.join("blobs"),
            synced_blobs: parking_lot::Mutex::new(HashSet::new()),
        };
        *e.synced_blobs.get_mut() = e.blob_files()?;
        Ok(e)
    }

    fn blob_files(&self) -> Result<HashSet<PathBuf>, StorageError> {
        match std::fs::read_dir(&self.blob_dir) {
            Ok(rd) => Ok(rd.filter_map(|e| e.ok().map(|e| e.path())).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes one group atomically across the trees (not yet durable).
    pub fn write_group(&self, g: &GroupWrite) -> Result<(), StorageError> {
        let mut log = Batch::default();
        for (seq, bytes) in &g.records {
            log.insert(&seq.to_be_bytes(), bytes.as_slice());
        }
        let mut ids = Batch::default();
        for (id, seq) in &g.ids {
            ids.insert(id.as_bytes(), &seq.to_be_bytes());
        }
        let mut wf = Batch::default();
        for (w, seq) in &g.wf {
            wf.insert(&wf_key(w, *seq), &[]);
        }
        let mut content = Batch::default();
        for (h, bytes) in &g.content {
            content.insert(h, bytes.as_slice());
        }
        (&self.log, &self.ids, &self.wf, &self.content)
            .transaction(|(log_t, ids_t, wf_t, content_t)| {
                log_t.apply_batch(&log)?;
                ids_t.apply_batch(&ids)?;
                wf_t.apply_batch(&wf)?;
                content_t.apply_batch(&content)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(s) => StorageError::Engine(s),
                TransactionError::Abort(()) => StorageError::Corrupt("group write aborted".into()),
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

    /// Iterates the ids tree: (id, seq).
    pub fn scan_ids(&self) -> impl Iterator<Item = Result<(Uuid, Seq), StorageError>> + '_ {
        self.ids.iter().map(|kv| {
            let (k, v) = kv?;
            let id = Uuid::from_slice(&k).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            Ok((id, seq_of(&v)?))
        })
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

    /// Sets a sink cursor and makes it durable.
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

    /// Records a dead-lettered event of `sink`.
    pub fn put_dead_letter(&self, sink: &str, seq: Seq, error: &str) -> Result<(), StorageError> {
        let mut k = sink.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&seq.to_be_bytes());
        self.dead.insert(k, error.as_bytes())?;
        self.dead.flush()?;
        Ok(())
    }

    /// Dead letters of `sink`: (seq, error).
    pub fn dead_letters(&self, sink: &str) -> Result<Vec<(Seq, String)>, StorageError> {
        let mut prefix = sink.as_bytes().to_vec();
        prefix.push(0);
        self.dead
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    seq_of(&k[prefix.len()..])?,
                    String::from_utf8_lossy(&v).into_owned(),
                ))
            })
            .collect()
    }

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
