//! sled patch 6 (`storage/vendor/PATCHES.md`): the log's file is zero-filled and synced
//! ahead of the segments in use, so that a flush of a growing log writes into blocks the
//! file already has and its `fdatasync` persists no new file size.
//!
//! What must hold: sled's own writes never extend the file (only a fill does, to a
//! segment boundary), a zeroed tail left past the data, whole or cut short by a crash,
//! reads back at open as free space, and every value written before and after reads back.

use std::path::Path;
use std::time::Duration;

/// sled's default segment size (`Config::segment_size`), which arbor keeps.
const SEGMENT: u64 = 512 * 1024;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn value(key: u64) -> Vec<u8> {
    let mut v = key.to_be_bytes().to_vec();
    v.resize(2048, (key % 251) as u8);
    v
}

fn file_len(dir: &Path) -> Res<u64> {
    Ok(std::fs::metadata(dir.join("db"))?.len())
}

/// Inserts `keys` (2 KiB values), flushing every 40, and returns the file's length
/// after each flush.
fn write(tree: &sled::Tree, keys: std::ops::Range<u64>, dir: &Path) -> Res<Vec<u64>> {
    let mut lens = Vec::new();
    for k in keys {
        tree.insert(k.to_be_bytes(), value(k))?;
        if k % 40 == 39 {
            tree.flush()?;
            lens.push(file_len(dir)?);
        }
    }
    tree.flush()?;
    lens.push(file_len(dir)?);
    Ok(lens)
}

/// Returns once every thread of a dropped `Db` is done with the file in `dir`. sled holds
/// an exclusive `flock` on `<dir>/db` for as long as anything holds the file, and a zero
/// fill running on its thread pool can outlive the last handle by a moment; a reopen (or
/// a test's own write to the file) before that fails or races it. arbor's `Engine` waits
/// the same way when it is dropped (`log::LockRelease`).
fn released(dir: &Path) -> Res {
    arbor_storage::wait_for_sled_release(&dir.join("db"), Duration::from_secs(10))
        .map_err(|e| format!("sled kept its lock on {}: {e}", dir.display()).into())
}

fn check_all(tree: &sled::Tree, n: u64) -> Res {
    for k in 0..n {
        let got = tree.get(k.to_be_bytes())?;
        assert_eq!(got.as_deref(), Some(value(k).as_slice()), "key {k}");
    }
    assert_eq!(tree.iter().count() as u64, n, "a scan sees every key once");
    Ok(())
}

#[test]
fn the_log_grows_into_zeroed_space_and_never_past_the_end_of_the_file() -> Res {
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new().path(dir.path()).open()?;
    let tree = db.open_tree("t")?;
    // ~40 MiB of values: the file grows through many fills.
    let lens = write(&tree, 0..20_000, dir.path())?;
    let grown: Vec<u64> = lens.iter().copied().filter(|l| *l > 3 * SEGMENT).collect();
    assert!(grown.len() > 400, "the file grew past its first fill");
    for len in &grown {
        // A flush that wrote past the end would leave the file ending inside a segment.
        assert_eq!(
            len % SEGMENT,
            0,
            "the file ends on a segment boundary: {len}"
        );
    }
    let mut steps = grown.clone();
    steps.dedup();
    assert!(
        steps.len() >= 4,
        "the file grew in several fills: {steps:?}"
    );
    check_all(&tree, 20_000)
}

#[test]
fn a_zeroed_tail_whole_or_cut_short_reads_back_as_free_space() -> Res {
    let dir = tempfile::tempdir()?;
    {
        let db = sled::Config::new().path(dir.path()).open()?;
        let tree = db.open_tree("t")?;
        write(&tree, 0..4_000, dir.path())?;
    }
    released(dir.path())?;
    // A fill cut short by a crash: zeros past the end, ending inside a segment.
    let len = file_len(dir.path())?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("db"))?;
    f.set_len(len + 3 * SEGMENT + SEGMENT / 3)?;
    drop(f);
    {
        let db = sled::Config::new().path(dir.path()).open()?;
        let tree = db.open_tree("t")?;
        check_all(&tree, 4_000)?;
        write(&tree, 4_000..8_000, dir.path())?;
        check_all(&tree, 8_000)?;
    }
    released(dir.path())?;
    let db = sled::Config::new().path(dir.path()).open()?;
    let tree = db.open_tree("t")?;
    check_all(&tree, 8_000)?;
    write(&tree, 8_000..9_000, dir.path())?;
    check_all(&tree, 9_000)
}

#[test]
fn a_new_file_s_first_segments_are_written_after_their_zeros() -> Res {
    // A new file's first fill covers the first segment sled writes: sled must wait for
    // it, or zeros land on its data.
    for _ in 0..12 {
        let dir = tempfile::tempdir()?;
        {
            let db = sled::Config::new().path(dir.path()).open()?;
            let tree = db.open_tree("t")?;
            write(&tree, 0..600, dir.path())?;
            check_all(&tree, 600)?;
        }
        released(dir.path())?;
        let db = sled::Config::new().path(dir.path()).open()?;
        check_all(&db.open_tree("t")?, 600)?;
    }
    Ok(())
}
