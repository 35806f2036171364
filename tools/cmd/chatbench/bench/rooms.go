package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// benchRoomPrefix starts the name of every room chatbench creates; pruning
// only ever leaves rooms named so.
const benchRoomPrefix = "bench "

// Rooms are reused from run to run and every bench room outside the plan is
// left, so each run of a shape starts from the same state. Without that,
// every run added rooms: after a few dozen runs a bench user shared rooms
// with hundreds of others (the fan-out shape's room of 1,000 among them),
// and each of the run's 1,000 connects routed a presence_update to all of
// them, a storm of millions of frames that took the gateways' CPU for most
// of the next run and made its latency a measure of the bench's history.

// roomCache is <DataDir>/bench/rooms.json: per api URL, per plan key, the
// ids of the rooms made for that plan.
type roomCache struct {
	path string
	mu   sync.Mutex
	data map[string]map[string][]string
}

func loadRoomCache(dataDir string) *roomCache {
	c := &roomCache{path: filepath.Join(dataDir, "bench", "rooms.json"), data: map[string]map[string][]string{}}
	if raw, err := os.ReadFile(c.path); err == nil {
		// A corrupt cache only means the rooms are made again.
		_ = json.Unmarshal(raw, &c.data)
	}
	return c
}

func (c *roomCache) get(api, key string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.data[api][key])
}

func (c *roomCache) put(api, key string, ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.data[api] == nil {
		c.data[api] = map[string][]string{}
	}
	c.data[api][key] = slices.Clone(ids)
}

func (c *roomCache) save() error {
	c.mu.Lock()
	raw, err := json.MarshalIndent(c.data, "", "  ")
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encode room cache: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return fmt.Errorf("room cache: %w", err)
	}
	tmp := c.path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("room cache: %w", err)
	}
	if err := os.Rename(tmp, c.path); err != nil {
		return fmt.Errorf("room cache: %w", err)
	}
	return nil
}

// planKey names a plan's rooms: the same accounts in the same rooms give
// the same key, whatever the scenario or rate.
func planKey(accs []account, rooms [][]int) string {
	h := sha256.New()
	for _, members := range rooms {
		for _, m := range members {
			h.Write([]byte(accs[m].ID))
			h.Write([]byte{','})
		}
		h.Write([]byte{';'})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// roomSetup counts what ensureRooms did.
type roomSetup struct {
	reused, created, left atomic.Int64
}

// ensureRooms returns the ids of the plan's rooms (index r = plan room r):
// cached rooms whose members are still exactly the plan's are reused, the
// others made again. Then every plan user leaves the bench rooms it is in
// that are not the plan's. name(r) names a room made now; done counts
// rooms ready.
func ensureRooms(ctx context.Context, a *apiClient, cache *roomCache, accs []account, rooms [][]int,
	name func(r int) string, done *atomic.Int64, st *roomSetup) ([]string, error) {
	key := planKey(accs, rooms)
	cached := cache.get(a.base, key)
	ids := make([]string, len(rooms))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for r, members := range rooms {
		g.Go(func() error {
			if r < len(cached) && cached[r] != "" {
				ok, err := roomHas(gctx, a, accs, cached[r], members)
				if err != nil {
					return err
				}
				if ok {
					ids[r] = cached[r]
					st.reused.Add(1)
					done.Add(1)
					return nil
				}
			}
			id, err := createRoom(gctx, a, accs, name(r), members)
			if err != nil {
				return err
			}
			ids[r] = id
			st.created.Add(1)
			done.Add(1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	cache.put(a.base, key, ids)
	if err := cache.save(); err != nil {
		return nil, err
	}
	return ids, leaveOtherRooms(ctx, a, accs, rooms, ids, st)
}

// roomHas reports whether room id exists with exactly members (a 403 or
// 404 to its creator means it is gone or no longer the creator's).
func roomHas(ctx context.Context, a *apiClient, accs []account, id string, members []int) (bool, error) {
	var ans struct {
		Members []struct {
			UserID string `json:"userId"`
		} `json:"members"`
	}
	_, err := a.do(ctx, http.MethodGet, "/api/rooms/"+id+"/members", accs[members[0]].Token, nil, &ans)
	var ae *apiError
	if errors.As(err, &ae) && (ae.Status == http.StatusForbidden || ae.Status == http.StatusNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check room %s: %w", id, err)
	}
	if len(ans.Members) != len(members) {
		return false, nil
	}
	want := make(map[string]bool, len(members))
	for _, m := range members {
		want[accs[m].ID] = true
	}
	for _, m := range ans.Members {
		if !want[m.UserID] {
			return false, nil
		}
	}
	return true, nil
}

// leaveOtherRooms makes every user of the plan leave the bench rooms it
// is in that are not among ids. Rooms not named by chatbench are left
// alone.
func leaveOtherRooms(ctx context.Context, a *apiClient, accs []account, rooms [][]int, ids []string, st *roomSetup) error {
	keep := make(map[string]bool, len(ids))
	for _, id := range ids {
		keep[id] = true
	}
	var users []int
	seen := map[int]bool{}
	for _, members := range rooms {
		for _, m := range members {
			if !seen[m] {
				seen[m] = true
				users = append(users, m)
			}
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, u := range users {
		g.Go(func() error {
			var ans struct {
				Rooms []struct {
					ID   string `json:"id"`
					Name string `json:"name"`
					Type string `json:"type"`
				} `json:"rooms"`
			}
			if _, err := a.do(gctx, http.MethodGet, "/api/rooms", accs[u].Token, nil, &ans); err != nil {
				return fmt.Errorf("list rooms of %s: %w", accs[u].Username, err)
			}
			for _, room := range ans.Rooms {
				if keep[room.ID] || room.Type == "direct" || !strings.HasPrefix(room.Name, benchRoomPrefix) {
					continue
				}
				if _, err := a.do(gctx, http.MethodPost, "/api/rooms/"+room.ID+"/leave", accs[u].Token, nil, nil); err != nil {
					return fmt.Errorf("%s leaves old bench room %s: %w", accs[u].Username, room.ID, err)
				}
				st.left.Add(1)
			}
			return nil
		})
	}
	return g.Wait()
}

// roomName is the name of plan room r made by run runID.
func roomName(scenario, runID string, r int) string {
	return benchRoomPrefix + scenario + " " + runID + " #" + strconv.Itoa(r)
}
