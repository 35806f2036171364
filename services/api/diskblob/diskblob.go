// Package diskblob stores uploaded files on the local disk: one file per
// blob under a root directory, written to a temporary name and renamed into
// place once complete, so a reader never sees a partial blob.
package diskblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
)

// idPattern is what a blob id may be: it becomes a file name, so nothing
// that could climb out of the root (no separators, no dots) is accepted,
// even though os.Root would refuse such a path too.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{8,64}$`)

// ErrNotFound is returned by Open and Delete for a blob that does not
// exist; it is an fs.ErrNotExist.
var ErrNotFound = fmt.Errorf("diskblob: %w", fs.ErrNotExist)

// Store keeps blobs under one directory, fanned out into subdirectories by
// the first two characters of the id.
type Store struct {
	root *os.Root
}

// New opens (creating it if needed) the directory dir as a Store.
func New(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("diskblob: directory required")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("diskblob: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("diskblob: %w", err)
	}
	return &Store{root: root}, nil
}

// Close releases the directory.
func (s *Store) Close() error { return s.root.Close() }

func blobPath(id string) (string, error) {
	if !idPattern.MatchString(id) {
		return "", fmt.Errorf("diskblob: invalid id %q", id)
	}
	return path.Join(id[:2], id), nil
}

// Put writes everything r yields as blob id and returns its size. The blob
// appears only once it is complete and synced; on any error (ctx ended, r
// failed) nothing is left behind. Putting an id that exists replaces it.
func (s *Store) Put(ctx context.Context, id string, r io.Reader) (int64, error) {
	p, err := blobPath(id)
	if err != nil {
		return 0, err
	}
	if err := s.root.MkdirAll(path.Dir(p), 0o750); err != nil {
		return 0, fmt.Errorf("diskblob: %w", err)
	}
	tmp := p + ".partial"
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return 0, fmt.Errorf("diskblob: %w", err)
	}
	n, err := io.Copy(f, ctxReader{ctx: ctx, r: r})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.root.Rename(tmp, p)
	}
	if err != nil {
		_ = s.root.Remove(tmp)
		return 0, fmt.Errorf("diskblob: put %s: %w", id, err)
	}
	return n, nil
}

// Open returns blob id for reading and its size, or ErrNotFound.
func (s *Store) Open(_ context.Context, id string) (io.ReadCloser, int64, error) {
	p, err := blobPath(id)
	if err != nil {
		return nil, 0, err
	}
	f, err := s.root.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("diskblob: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("diskblob: %w", err)
	}
	return f, st.Size(), nil
}

// Delete removes blob id; a blob that does not exist is ErrNotFound.
func (s *Store) Delete(_ context.Context, id string) error {
	p, err := blobPath(id)
	if err != nil {
		return err
	}
	err = s.root.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("diskblob: %w", err)
	}
	return nil
}

// ctxReader stops a copy once ctx ends (a client gone mid-upload).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
