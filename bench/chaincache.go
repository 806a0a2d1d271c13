package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// chainCounts are edgegate's verified-chain cache counters for the bench's
// mtls vhost, as its /metrics shows them.
type chainCounts struct {
	hits, misses float64
}

// Names of the counters edgegate exports for its verified-chain cache.
const (
	metricChainHits   = "edgegate_client_chain_cache_hits_total"
	metricChainMisses = "edgegate_client_chain_cache_misses_total"
)

// scrapeChainCache reads the cache counters of the vhost "mtls" from the
// metrics endpoint at addr.
func scrapeChainCache(ctx context.Context, addr string) (chainCounts, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return chainCounts{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return chainCounts{}, fmt.Errorf("scrape %s: %w", addr, err)
	}
	defer resp.Body.Close()
	var c chainCounts
	found := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasSuffix(name, `{vhost="mtls"}`) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch strings.TrimSuffix(name, `{vhost="mtls"}`) {
		case metricChainHits:
			c.hits, found = v, found+1
		case metricChainMisses:
			c.misses, found = v, found+1
		}
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if found != 2 {
		return c, fmt.Errorf("%s/metrics has no %s and %s for vhost mtls", addr, metricChainHits, metricChainMisses)
	}
	return c, nil
}

// cacheWatch samples edgegate's chain cache counters at the start of a row,
// to report the hit rate over it. It is nil, and does nothing, for the
// other systems.
type cacheWatch struct {
	h     *harness
	addr  string
	start chainCounts
	err   error
}

// chainCacheWatch starts watching r's chain cache if r is edgegate doing
// an mtls job.
func (h *harness) chainCacheWatch(r *running) *cacheWatch {
	addr, ok := h.ports[r.system+"/"+r.flavor.String()+"/metrics"]
	if r.system != sysEdgegate || !ok {
		return nil
	}
	w := &cacheWatch{h: h, addr: addr}
	w.start, w.err = scrapeChainCache(context.Background(), addr)
	return w
}

// since returns the counters' growth since the watch started (or since
// the last call to reset).
func (w *cacheWatch) since() (chainCounts, error) {
	if w.err != nil {
		return chainCounts{}, w.err
	}
	now, err := scrapeChainCache(context.Background(), w.addr)
	if err != nil {
		return chainCounts{}, err
	}
	return chainCounts{hits: now.hits - w.start.hits, misses: now.misses - w.start.misses}, nil
}

// reset makes the watch start again from now.
func (w *cacheWatch) reset() {
	w.start, w.err = scrapeChainCache(context.Background(), w.addr)
}

// report puts the hit rate since the start into row as mCacheHit, or a
// note when the counters could not be read.
func (w *cacheWatch) report(row *Row) {
	if w == nil || row.Metrics == nil {
		return
	}
	d, err := w.since()
	if err != nil {
		row.Note = strings.TrimSpace(row.Note + " chain cache counters unreadable: " + err.Error())
		return
	}
	if n := d.hits + d.misses; n > 0 {
		f := d.hits / n * 100
		row.Metrics[mCacheHit] = Stat{Median: f, Min: f, Max: f, N: 1}
	}
}
