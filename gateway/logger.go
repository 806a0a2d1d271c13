package gateway

import (
	"io"
	"log/slog"

	"github.com/edgegate/edgegate/gateway/config"
)

// NewLogger returns the structured logger the configuration asks for.
func NewLogger(w io.Writer, c config.Log) (*slog.Logger, error) {
	lvl, err := config.ParseLevel(c.Level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
