package redis

import (
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
)

// PoolCollector exports a client's connection pool statistics:
// redis_pool_connections{state} (idle, in_use) and the counters of hits,
// misses, timeouts and stale connections.
type PoolCollector struct {
	c                                    goredis.UniversalClient
	conns, hits, misses, timeouts, stale *prometheus.Desc
}

// NewPoolCollector returns a collector of c's pool.
func NewPoolCollector(c goredis.UniversalClient) *PoolCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &PoolCollector{c: c,
		conns:    d("redis_pool_connections", "Connections in the Redis client pool, by state (idle, in_use).", "state"),
		hits:     d("redis_pool_hits_total", "Times a free connection was found in the pool."),
		misses:   d("redis_pool_misses_total", "Times no free connection was in the pool (a new one was dialled or awaited)."),
		timeouts: d("redis_pool_timeouts_total", "Times waiting for a pool connection timed out."),
		stale:    d("redis_pool_stale_connections_total", "Stale connections removed from the pool."),
	}
}

// Describe implements prometheus.Collector.
func (p *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{p.conns, p.hits, p.misses, p.timeouts, p.stale} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (p *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := p.c.PoolStats()
	ch <- prometheus.MustNewConstMetric(p.conns, prometheus.GaugeValue, float64(s.IdleConns), "idle")
	ch <- prometheus.MustNewConstMetric(p.conns, prometheus.GaugeValue, float64(s.TotalConns-s.IdleConns), "in_use")
	ch <- prometheus.MustNewConstMetric(p.hits, prometheus.CounterValue, float64(s.Hits))
	ch <- prometheus.MustNewConstMetric(p.misses, prometheus.CounterValue, float64(s.Misses))
	ch <- prometheus.MustNewConstMetric(p.timeouts, prometheus.CounterValue, float64(s.Timeouts))
	ch <- prometheus.MustNewConstMetric(p.stale, prometheus.CounterValue, float64(s.StaleConns))
}
