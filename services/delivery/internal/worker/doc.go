// Package delivery is the delivery worker: consumer group `delivery` on the
// room event log. Per partition, in offset order, it renders each event
// once into the client frame, and with one Lua script moves the room's last
// seq, appends the publication to the room's recent history and publishes
// it on the room's Redis channel, where gateways pick it up.
package worker
