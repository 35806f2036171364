package ratelimit

import (
	"sync"

	"relay/pkg/chat"
)

// ConnCaps bounds the concurrent connections one user and one client
// address hold on this instance, so a single account or host cannot take
// every slot of a gateway. The counts are per instance (a connection lives
// on one instance, and a crashed instance's count dies with it); the
// deployment's instance count times the cap is the global bound.
type ConnCaps struct {
	// PerUser is the most connections one user may hold; zero means no cap.
	PerUser int
	// PerAddr is the most connections one client address may hold
	// (authenticated or not); zero means no cap.
	PerAddr int

	mu    sync.Mutex
	users map[int64]int
	addrs map[string]int
}

// Acquire counts a connection of user (0 for one not yet authenticated)
// from addr. It returns a release func to call exactly once when the
// connection ends (later calls do nothing), or a RATE_LIMITED error when a
// cap is reached.
func (c *ConnCaps) Acquire(user int64, addr string) (release func(), err error) {
	return c.acquire(user, addr, true)
}

// AcquireAddr counts a connection of addr whose user is not known yet (a
// Socket.IO session before its CONNECT); AcquireUser counts its user once
// it is.
func (c *ConnCaps) AcquireAddr(addr string) (release func(), err error) {
	return c.acquire(0, addr, true)
}

// AcquireUser counts a connection of user whose address was counted
// already (AcquireAddr).
func (c *ConnCaps) AcquireUser(user int64) (release func(), err error) {
	return c.acquire(user, "", false)
}

func (c *ConnCaps) acquire(user int64, addr string, countAddr bool) (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.users == nil {
		c.users, c.addrs = map[int64]int{}, map[string]int{}
	}
	if countAddr && c.PerAddr > 0 && c.addrs[addr] >= c.PerAddr {
		return nil, chat.Errorf(chat.CodeRateLimited, "too many connections from this address (at most %d)", c.PerAddr)
	}
	if user != 0 && c.PerUser > 0 && c.users[user] >= c.PerUser {
		return nil, chat.Errorf(chat.CodeRateLimited, "too many connections for this account (at most %d); close another one", c.PerUser)
	}
	if countAddr {
		c.addrs[addr]++
	}
	if user != 0 {
		c.users[user]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if countAddr {
				if c.addrs[addr]--; c.addrs[addr] <= 0 {
					delete(c.addrs, addr)
				}
			}
			if user != 0 {
				if c.users[user]--; c.users[user] <= 0 {
					delete(c.users, user)
				}
			}
		})
	}, nil
}

// Counts returns the connections held by user and by addr.
func (c *ConnCaps) Counts(user int64, addr string) (byUser, byAddr int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.users[user], c.addrs[addr]
}
