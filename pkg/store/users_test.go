package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/store"
	"relay/pkg/testenv"
)

// queriesDB returns a fresh database, skipping in -short mode.
func queriesDB(t *testing.T) *gorm.DB {
	t.Helper()
	if testenv.Short() {
		t.Skip("integration test")
	}
	t.Parallel()
	return testenv.DB(t)
}

// queriesUser inserts a user named name and returns it.
func queriesUser(t *testing.T, db *gorm.DB, name string) *store.User {
	t.Helper()
	u := &store.User{Username: name, Email: name + "@example.com", PasswordHash: "x", DisplayName: name}
	if err := store.CreateUser(context.Background(), db, u); err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	return u
}

func wantCode(t *testing.T, err error, code chat.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s", code)
	}
	if got := chat.ErrorCode(err); got != code {
		t.Fatalf("got %s (%v), want %s", got, err, code)
	}
}

func TestCreateUserConflicts(t *testing.T) {
	db := queriesDB(t)
	ctx := context.Background()
	alice := queriesUser(t, db, "alice")
	if alice.ID == 0 || alice.CreatedAt.IsZero() {
		t.Fatalf("id and created_at not filled in: %+v", alice)
	}
	if again, err := store.UserByID(ctx, db, alice.ID); err != nil || !again.CreatedAt.Equal(alice.CreatedAt) {
		t.Fatalf("created_at returned %v, stored %v (%v)", alice.CreatedAt, again.CreatedAt, err)
	}
	err := store.CreateUser(ctx, db, &store.User{Username: "alice", Email: "other@example.com", PasswordHash: "x"})
	wantCode(t, err, chat.CodeConflict)
	if msg := chat.ErrorMessage(err); msg != "username is already taken" {
		t.Errorf("message %q", msg)
	}
	err = store.CreateUser(ctx, db, &store.User{Username: "alice2", Email: "alice@example.com", PasswordHash: "x"})
	wantCode(t, err, chat.CodeConflict)
	if msg := chat.ErrorMessage(err); msg != "email is already registered" {
		t.Errorf("message %q", msg)
	}
}

func TestCreateUserConcurrentOneWins(t *testing.T) {
	db := queriesDB(t)
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = store.CreateUser(context.Background(), db, &store.User{
				Username: "race", Email: fmt.Sprintf("race%d@example.com", i), PasswordHash: "x",
			})
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case chat.ErrorCode(err) != chat.CodeConflict:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d writers won, want exactly 1", wins)
	}
}

func TestUserLookups(t *testing.T) {
	db := queriesDB(t)
	ctx := context.Background()
	bob := queriesUser(t, db, "bob")

	got, err := store.UserByID(ctx, db, bob.ID)
	if err != nil || got.Username != "bob" {
		t.Fatalf("UserByID = %+v, %v", got, err)
	}
	_, err = store.UserByID(ctx, db, bob.ID+1000)
	wantCode(t, err, chat.CodeNotFound)

	for _, login := range []string{"bob", "BOB", " bob@Example.com "} {
		got, err := store.UserByLogin(ctx, db, login)
		if err != nil || got.ID != bob.ID {
			t.Errorf("UserByLogin(%q) = %+v, %v", login, got, err)
		}
	}
	_, err = store.UserByLogin(ctx, db, "nobody")
	wantCode(t, err, chat.CodeNotFound)

	missing, err := store.MissingUsers(ctx, db, []int64{bob.ID, bob.ID + 7, bob.ID + 3})
	if err != nil || fmt.Sprint(missing) != fmt.Sprint([]int64{bob.ID + 7, bob.ID + 3}) {
		t.Fatalf("MissingUsers = %v, %v", missing, err)
	}
}
