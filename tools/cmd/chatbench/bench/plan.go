package bench

import (
	"math/rand/v2"
	"time"
)

// Plan is who is where: the members of every room, the rooms of every user,
// which users send and which connection each one uses. It is a pure
// function of Params, so a run is reproducible and testable without servers.
type Plan struct {
	// RoomMembers[r] are the user indexes of room r; the first is its creator.
	RoomMembers [][]int
	// UserRooms[u] are the rooms of user u.
	UserRooms [][]int
	// Senders are user indexes; sender k sends on connection Senders[k]
	// (a user's first connection has the user's index).
	Senders []int
	// Interval is the gap between two sends of one sender.
	Interval time.Duration
}

// NewPlan lays out rooms and senders. Room r takes the next RoomSize users
// after room r-1's, wrapping around, so members are consecutive, rooms
// spread evenly over users and no room repeats a user. Senders are spread
// evenly over the users that have a room.
func NewPlan(p Params) (*Plan, error) {
	rng := rand.New(rand.NewPCG(uint64(p.Seed), 0x6368617462656e63)) // "chatbenc"
	pl := &Plan{RoomMembers: make([][]int, p.Rooms), UserRooms: make([][]int, p.Users)}
	next := 0
	for r := range p.Rooms {
		size := p.RoomSize.Min
		if p.RoomSize.Max > p.RoomSize.Min {
			size += rng.IntN(p.RoomSize.Max - p.RoomSize.Min + 1)
		}
		members := make([]int, size)
		for j := range size {
			u := (next + j) % p.Users
			members[j] = u
			pl.UserRooms[u] = append(pl.UserRooms[u], r)
		}
		next = (next + size) % p.Users
		pl.RoomMembers[r] = members
	}
	for u, rooms := range pl.UserRooms {
		if len(rooms) > maxRoomsPerUser {
			return nil, usagef("user %d would be in %d rooms; chatbench joins at most %d per connection: add users or fewer/smaller rooms", u, len(rooms), maxRoomsPerUser)
		}
	}
	if p.Senders > 0 {
		var roomed []int
		for u, rooms := range pl.UserRooms {
			if len(rooms) > 0 {
				roomed = append(roomed, u)
			}
		}
		if p.Senders > len(roomed) {
			return nil, usagef("--senders %d: only %d users are in a room (--rooms × --room-size); lower --senders or add rooms", p.Senders, len(roomed))
		}
		pl.Senders = make([]int, p.Senders)
		for k := range pl.Senders {
			pl.Senders[k] = roomed[k*len(roomed)/p.Senders]
		}
	}
	return pl, nil
}

// SenderInterval is the gap between two sends of one sender when s senders
// share rate messages/s.
func SenderInterval(rate float64, senders int) time.Duration {
	if rate <= 0 || senders <= 0 {
		return 0
	}
	return time.Duration(float64(senders) / rate * float64(time.Second))
}

// SendsPerSender is how many messages one sender sends in d at interval,
// the first at offset (< interval): the capacity of its message table.
func SendsPerSender(d, interval, offset time.Duration) int {
	if interval <= 0 || offset >= d {
		return 0
	}
	return int((d-offset-1)/interval) + 1
}
