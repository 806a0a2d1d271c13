package gateway

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/edgegate/edgegate/gateway/config"
)

// NewLogger returns the structured logger the configuration asks for. A
// Server that logs through it applies a reload's log.level and log.format
// to it, so it is the logger to give NewServer.
func NewLogger(w io.Writer, c config.Log) (*slog.Logger, error) {
	h := &logHandler{w: w}
	if err := h.set(c); err != nil {
		return nil, err
	}
	return slog.New(h), nil
}

// logHandler writes through a text or JSON handler that a reload can swap
// for another level or format while lines are being written.
type logHandler struct {
	w   io.Writer
	cur atomic.Pointer[slog.Handler]
}

// set makes c's level and format the ones used from now on.
func (h *logHandler) set(c config.Log) error {
	lvl, err := config.ParseLevel(c.Level)
	if err != nil {
		return err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var next slog.Handler = slog.NewTextHandler(h.w, opts)
	if c.Format == "json" {
		next = slog.NewJSONHandler(h.w, opts)
	}
	h.cur.Store(&next)
	return nil
}

func (h *logHandler) current() slog.Handler { return *h.cur.Load() }

// Enabled implements slog.Handler.
func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.current().Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.current().Handle(ctx, r)
}

// WithAttrs implements slog.Handler. The attributes are bound to the
// handler in force now: edgegate derives no loggers, so nothing is lost.
func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler { return h.current().WithAttrs(as) }

// WithGroup implements slog.Handler, like WithAttrs.
func (h *logHandler) WithGroup(name string) slog.Handler { return h.current().WithGroup(name) }

// applyLog makes a reload's log settings take effect on the server's
// logger, when it is one NewLogger made; it reports whether it could.
func applyLog(l *slog.Logger, c config.Log) bool {
	h, ok := l.Handler().(*logHandler)
	return ok && h.set(c) == nil
}
