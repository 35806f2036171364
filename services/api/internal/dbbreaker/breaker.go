// Package dbbreaker is a circuit breaker around a service's PostgreSQL
// access, installed as a GORM plugin.
package dbbreaker

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/telemetry"
)

// Breaker is a circuit breaker around the api's PostgreSQL access, so an
// outage fails requests at once with 503 UNAVAILABLE instead of each one
// waiting for the database.
//
// It is a GORM plugin: every statement (query, create, update, delete,
// raw, row) asks the breaker first and reports whether the database
// answered. A statement refused, or failing for want of a database, ends
// in a chat UNAVAILABLE error (503). A transaction's BEGIN runs outside
// GORM's callbacks, but no request gets there without a statement first
// (requireAuth loads the user), so an open breaker refuses those too.
// /ready fails while it is open.
type Breaker struct {
	cb    *gobreaker.TwoStepCircuitBreaker[struct{}]
	state *prometheus.GaugeVec
	log   *slog.Logger
}

// breakerName names the breaker in logs and metrics.
const breakerName = "postgres"

// New returns a breaker that opens after failures consecutive statements
// found no database and stays open for openTimeout before one trial; its
// state is the api_breaker_state gauge, registered on reg.
func New(failures uint32, openTimeout time.Duration, log *slog.Logger, reg prometheus.Registerer) (*Breaker, error) {
	b := &Breaker{
		log: log,
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "api_breaker_state", Help: "1 for the current state (closed, half-open, open) of each breaker, 0 for the others.",
		}, []string{"breaker", "state"}),
	}
	if err := reg.Register(b.state); err != nil {
		return nil, err
	}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        breakerName,
		MaxRequests: 1,
		Timeout:     openTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		// A database that answered, even with an error, is up.
		IsSuccessful: func(err error) bool { return !dbDown(err) },
		// A client that went away says nothing about the database.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			log.Warn("database breaker changed state", "breaker", name, "from", from.String(), "to", to.String())
			b.setState(to)
		},
	})
	b.setState(gobreaker.StateClosed)
	return b, nil
}

func (b *Breaker) setState(s gobreaker.State) {
	telemetry.SetBreakerState(b.state, s, breakerName)
}

// Open reports whether the breaker refuses requests.
func (b *Breaker) Open() bool { return b.cb.State() == gobreaker.StateOpen }

// Name implements gorm.Plugin.
func (b *Breaker) Name() string { return "relay:db-breaker" }

// Initialize implements gorm.Plugin: the breaker's callbacks go first and
// last around every statement.
func (b *Breaker) Initialize(db *gorm.DB) error {
	cb := db.Callback()
	for _, p := range []struct {
		before, after interface {
			Register(name string, fn func(*gorm.DB)) error
		}
	}{
		{cb.Create().Before("*"), cb.Create().After("*")},
		{cb.Query().Before("*"), cb.Query().After("*")},
		{cb.Update().Before("*"), cb.Update().After("*")},
		{cb.Delete().Before("*"), cb.Delete().After("*")},
		{cb.Row().Before("*"), cb.Row().After("*")},
		{cb.Raw().Before("*"), cb.Raw().After("*")},
	} {
		if err := p.before.Register("relay:breaker_before", b.before); err != nil {
			return err
		}
		if err := p.after.Register("relay:breaker_after", b.after); err != nil {
			return err
		}
	}
	return nil
}

// doneKey keeps a statement's breaker callback in its settings.
type doneKey struct{}

func (b *Breaker) before(db *gorm.DB) {
	if db.Error != nil {
		return // the statement will not run
	}
	done, err := b.cb.Allow()
	if err != nil {
		// GORM's own callbacks skip a statement that has an error.
		db.Error = chat.Wrap(chat.CodeUnavailable, err, "database unavailable; retry later")
		return
	}
	db.Statement.Settings.Store(doneKey{}, done)
}

func (b *Breaker) after(db *gorm.DB) {
	v, ok := db.Statement.Settings.LoadAndDelete(doneKey{})
	if !ok {
		return
	}
	if done, ok := v.(func(error)); ok {
		done(db.Error)
	}
	if dbDown(db.Error) && chat.ErrorCode(db.Error) == chat.CodeInternal {
		db.Error = chat.Wrap(chat.CodeUnavailable, db.Error, "database unavailable; retry")
	}
}

// pgFailure reports whether err is the PostgreSQL driver failing to reach
// or keep a connection.
func pgFailure(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || pgconn.SafeToRetry(err) || pgDownCode(err)
}

// dbDown reports whether err means the database could not be used (as
// opposed to a database that answered, e.g. with a constraint violation
// or no rows).
func dbDown(err error) bool {
	if err == nil || errors.Is(err, gorm.ErrRecordNotFound) || errors.Is(err, context.Canceled) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pgDownCode(err)
	}
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return true
	}
	var ne net.Error
	return pgFailure(err) || pgconn.Timeout(err) || errors.As(err, &ne) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, sql.ErrConnDone) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || strings.Contains(err.Error(), "conn closed")
}

// pgDownCode reports a server error that means the server cannot serve:
// connection exceptions (08), insufficient resources (53), operator
// intervention such as a shutdown (57P..), system errors (58).
func pgDownCode(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	c := pe.Code
	return strings.HasPrefix(c, "08") || strings.HasPrefix(c, "53") || strings.HasPrefix(c, "58") ||
		strings.HasPrefix(c, "57P")
}
