package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestDirSyncerSyncsWhatChanged checks which paths a sync fsyncs: new
// files and directories, appended files, replaced (renamed-over) files,
// and a file modified within the slack of the last sync even when its size
// and mtime look the same; not files untouched since an earlier sync.
func TestDirSyncerSyncsWhatChanged(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	write := func(name, data string, flag int) {
		t.Helper()
		f, err := os.OpenFile(filepath.Join(root, name), flag|os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(data); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	age := func(path string, at time.Time) {
		t.Helper()
		if err := os.Chtimes(path, at, at); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "partitions", "t-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("partitions/t-0/seg", "a", os.O_APPEND)
	write("meta.json", "{}", os.O_TRUNC)

	d := newDirSyncer(root)
	defer d.close()
	var got map[string]bool
	d.fsync = func(f *os.File, dir bool) error {
		got[f.Name()] = true
		return fsyncFile(f, dir)
	}
	sync := func() map[string]bool {
		t.Helper()
		got = map[string]bool{}
		if err := d.sync(); err != nil {
			t.Fatal(err)
		}
		return got
	}
	want := func(what string, got map[string]bool, paths ...string) {
		t.Helper()
		for _, p := range paths {
			if !got[filepath.Join(root, p)] {
				t.Errorf("%s: %q not synced (synced %v)", what, p, got)
			}
		}
	}
	want("first sync", sync(), "", "partitions", "partitions/t-0", "partitions/t-0/seg", "meta.json")

	// Everything last modified long before the last sync: nothing to do.
	old := time.Now().Add(-time.Hour)
	for p := range d.seen {
		age(p, old)
	}
	sync() // records the old mtimes
	d.lastStart = time.Now().Add(-time.Second)
	if got := sync(); len(got) != 0 {
		t.Errorf("nothing changed, but %v was synced", got)
	}

	// An append, and a file replaced by a rename (a new inode).
	write("partitions/t-0/seg", "b", os.O_APPEND)
	write("meta.tmp", "[]", os.O_TRUNC)
	if err := os.Rename(filepath.Join(root, "meta.tmp"), filepath.Join(root, "meta.json")); err != nil {
		t.Fatal(err)
	}
	want("append and rename", sync(), "", "partitions/t-0/seg", "meta.json")
	if _, ok := d.seen[filepath.Join(root, "meta.tmp")]; ok {
		t.Error("a renamed-away path is still held")
	}

	// Same size and mtime as the last sync saw, but that mtime is within
	// the slack of the last sync's start (a same-length overwrite in the
	// same clock tick looks like this): synced again.
	seg := filepath.Join(root, "partitions/t-0/seg")
	for p := range d.seen {
		age(p, old)
	}
	sync()
	d.lastStart = time.Now()
	recent := d.lastStart.Add(-mtimeSlack / 2)
	age(seg, recent)
	d.seen[seg].mtime = recent
	got = sync()
	want("within the slack", got, "partitions/t-0/seg")
	if len(got) != 1 {
		t.Errorf("within the slack: %v synced, want the segment only", got)
	}
}

// TestDirSyncerFailureResyncs: a failed fsync fails the sync (no ack) and
// the file is synced again next time.
func TestDirSyncerFailureResyncs(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "seg"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := newDirSyncer(root)
	defer d.close()
	fail := true
	var calls int
	d.fsync = func(f *os.File, dir bool) error {
		if !dir {
			calls++
			if fail {
				return errors.New("EIO")
			}
		}
		return nil
	}
	if err := d.sync(); err == nil {
		t.Fatal("a failed fsync was not reported")
	}
	fail = false
	if err := d.sync(); err != nil || calls != 2 {
		t.Fatalf("after a failure: %v, %d fsyncs of the file, want 2", err, calls)
	}
}
