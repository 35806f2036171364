package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// dirSyncer makes durable what was written under one directory, and only
// that: it fsyncs the files and directories there that changed since its
// last sync. A syncfs(2) of the filesystem would do the same, but it
// writes back every dirty page on the filesystem, PostgreSQL's and Redis's
// and every compiler's on a shared machine, so an ack would wait for all
// of them.
//
// A file changed when its size, mtime or inode differs from what the last
// sync saw. mtime moves in coarse clock ticks, so an overwrite of the same
// length within one tick of a sync would look unchanged: a file modified
// within mtimeSlack of the previous sync's start is synced again whatever
// its key says.
type dirSyncer struct {
	root string
	// seen maps a path to the state synced last, with an open handle
	// (fsync works through a read-only descriptor).
	seen map[string]*syncedFile
	// lastStart is when the previous sync began.
	lastStart time.Time
	// fsync syncs one file or directory (fsyncFile; tests record calls).
	fsync func(f *os.File, dir bool) error
}

// mtimeSlack covers the kernel's coarse timestamps (one jiffy, up to 10
// ms at HZ=100) with a margin.
const mtimeSlack = 50 * time.Millisecond

type syncedFile struct {
	f     *os.File
	size  int64
	mtime time.Time
	ino   uint64
	dir   bool
	found bool // seen in the current walk
}

func newDirSyncer(root string) *dirSyncer {
	return &dirSyncer{root: root, seen: map[string]*syncedFile{}, fsync: fsyncFile}
}

// sync walks root and fsyncs what changed (files with fdatasync, which
// includes the size a reader needs; directories with fsync, for entries
// created, renamed or removed). It is not safe for concurrent use: the
// groupSyncer runs one at a time.
func (d *dirSyncer) sync() error {
	start := time.Now()
	since := d.lastStart.Add(-mtimeSlack)
	for _, s := range d.seen {
		s.found = false
	}
	var errs []error
	err := filepath.WalkDir(d.root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking (a tmp file renamed)
			}
			return err
		}
		if !e.Type().IsRegular() && !e.IsDir() {
			return nil
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		var ino uint64
		if st, ok := info.Sys().(*unix.Stat_t); ok {
			ino = st.Ino
		}
		s := d.seen[path]
		if s != nil && s.ino != ino {
			_ = s.f.Close() // replaced by a rename: sync the new inode
			delete(d.seen, path)
			s = nil
		}
		if s != nil {
			s.found = true
			if s.size == info.Size() && s.mtime.Equal(info.ModTime()) && info.ModTime().Before(since) {
				return nil
			}
		} else {
			f, err := os.Open(path)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			s = &syncedFile{f: f, ino: ino, dir: e.IsDir(), found: true}
			d.seen[path] = s
		}
		if err := d.fsync(s.f, s.dir); err != nil {
			errs = append(errs, fmt.Errorf("fsync %s: %w", path, err))
			return nil
		}
		s.size, s.mtime = info.Size(), info.ModTime()
		return nil
	})
	for path, s := range d.seen {
		if !s.found {
			_ = s.f.Close()
			delete(d.seen, path)
		}
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("walk %s: %w", d.root, err))
	}
	if len(errs) == 0 {
		// Only a complete sync moves the mark: after a failure everything
		// recently modified is synced again.
		d.lastStart = start
	}
	return errors.Join(errs...)
}

func fsyncFile(f *os.File, dir bool) error {
	if dir {
		return f.Sync()
	}
	return unix.Fdatasync(int(f.Fd()))
}

// close releases the open handles.
func (d *dirSyncer) close() error {
	for path, s := range d.seen {
		_ = s.f.Close()
		delete(d.seen, path)
	}
	return nil
}
