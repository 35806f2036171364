package tracker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"relay/pkg/store"
)

// flushBatch bounds the users written in one transaction.
const flushBatch = 500

// flushLoop writes changed users to PostgreSQL every FlushInterval, and
// once more on shutdown.
func (s *Service) flushLoop(ctx context.Context) error {
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.HTTP.ShutdownTimeout)
			defer cancel()
			if err := s.flush(fctx); err != nil {
				s.log.Warn("presence: final PostgreSQL sync failed", "err", err)
			}
			return nil
		case <-t.C:
		}
		if err := s.flush(ctx); err != nil && ctx.Err() == nil {
			s.m.flushErrors.Inc()
			s.log.WarnContext(ctx, "presence: PostgreSQL sync failed; will retry", "err", err)
		}
	}
}

// flush writes every user marked dirty, batch by batch: it reads the
// current state from Redis (not the transition that marked it, so a burst
// of transitions costs one write), updates the rows, then clears the marks
// whose change count did not move meanwhile. Several instances may flush
// at once; the last_seen guard keeps an older state from overwriting a
// newer one.
func (s *Service) flush(ctx context.Context) error {
	for range 100 {
		zs, err := s.rdb.ZRangeWithScores(ctx, s.keys.Dirty(), 0, flushBatch-1).Result()
		if err != nil {
			return fmt.Errorf("read dirty users: %w", err)
		}
		if len(zs) == 0 {
			return nil
		}
		ids := make([]int64, 0, len(zs))
		marks := make([]any, 0, 2*len(zs))
		for _, z := range zs {
			m, _ := z.Member.(string)
			id, err := strconv.ParseInt(m, 10, 64)
			if err != nil || id <= 0 {
				s.rdb.ZRem(ctx, s.keys.Dirty(), m)
				continue
			}
			ids = append(ids, id)
			marks = append(marks, m, strconv.FormatFloat(z.Score, 'f', -1, 64))
		}
		sts, err := s.reader.Users(ctx, ids)
		if err != nil {
			return err
		}
		err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			for _, st := range sts {
				q := tx.Model(&store.User{}).Where("id = ?", st.UserID)
				cols := map[string]any{"is_online": st.Online()}
				if st.LastSeen != nil {
					q = q.Where("last_seen IS NULL OR last_seen <= ?", *st.LastSeen)
					cols["last_seen"] = *st.LastSeen
				}
				if err := q.UpdateColumns(cols).Error; err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("update users: %w", err)
		}
		s.m.dbUsers.Add(float64(len(sts)))
		if len(marks) > 0 {
			if err := clearDirtyScript.Run(ctx, s.rdb, []string{s.keys.Dirty()}, marks...).Err(); err != nil && !errors.Is(err, goredis.Nil) {
				return fmt.Errorf("clear dirty users: %w", err)
			}
		}
		if len(zs) < flushBatch {
			return nil
		}
	}
	return nil
}
