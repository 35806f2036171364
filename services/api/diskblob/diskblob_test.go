package diskblob

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPutOpenDelete(t *testing.T) {
	dir := t.TempDir()
	s, err := New(filepath.Join(dir, "uploads"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	n, err := s.Put(ctx, "abcdefgh12", strings.NewReader("hello"))
	if err != nil || n != 5 {
		t.Fatalf("Put: %d %v", n, err)
	}
	f, size, err := s.Open(ctx, "abcdefgh12")
	if err != nil || size != 5 {
		t.Fatalf("Open: %d %v", size, err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "hello" {
		t.Fatalf("read %q", b)
	}
	if err := s.Delete(ctx, "abcdefgh12"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Open(ctx, "abcdefgh12"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open after Delete: %v", err)
	}
	if err := s.Delete(ctx, "abcdefgh12"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
}

// Ids that could name a path outside the root are refused outright.
func TestHostileIDs(t *testing.T) {
	dir := t.TempDir()
	s, err := New(filepath.Join(dir, "uploads"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, id := range []string{"", "../../etc/passwd", "..", "ab/../../x12345", `ab\..\x12345`, "/etc/passwd", "abc", "abcdefgh\x00"} {
		if _, err := s.Put(ctx, id, strings.NewReader("x")); err == nil {
			t.Errorf("Put(%q) accepted", id)
		}
		if _, _, err := s.Open(ctx, id); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%q): %v, want an invalid-id error", id, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("files outside the root: %v", entries)
	}
}

// A failed write leaves nothing behind, not even a partial file.
func TestFailedPutLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	r := io.MultiReader(strings.NewReader("part"), readerFunc(func([]byte) (int, error) {
		cancel()
		return 0, errors.New("client went away")
	}))
	if _, err := s.Put(ctx, "abcdefgh12", r); err == nil {
		t.Fatal("Put succeeded")
	}
	var files []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, _ error) error {
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Fatalf("left behind: %v", files)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
