package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// benign names a warning or error that etcd or kube-apiserver logs on every
// start or stop of the lab's control plane and that means nothing here.
type benign struct {
	msg string // the whole message
	err string // a substring of the "err"/"error" attribute; "" for any
}

// etcdBenign: etcd in the lab's setup (plain HTTP on loopback, auth off).
var etcdBenign = []benign{
	{msg: "Running http and grpc server on single port. This is not recommended for production."},
	{msg: "simple token is not cryptographically signed"},
	{msg: "stopping insecure grpc server due to error", err: "use of closed network connection"},
	{msg: "stopped insecure grpc server due to error", err: "use of closed network connection"},
}

// apiserverBenign: a fresh kube-apiserver's controllers race the creation of
// kube-system and of the kubernetes Service, and retry.
var apiserverBenign = []benign{
	{msg: "Failed to ensure lease exists, will retry", err: `namespaces "kube-system" not found`},
	{msg: "Unhandled Error", err: `namespaces "kube-system" not found`},
	{msg: "Unhandled Error", err: "for Service default/kubernetes is not allocated; repairing"},
	// The "none" endpoint reconciler (loopback binds) reports success on
	// removing endpoints it never had, which this start-up check reads as
	// stale data.
	{msg: "Found stale data, removed previous endpoints on kubernetes service, apiserver didn't exit successfully previously"},
}

// quietHandler keeps etcd's and kube-apiserver's logs out of the way of the
// lab's own: records below Warn are lowered by four levels, so their Info
// (klog V(0)) lands at Debug and klog V(n) at Debug-n, and the benign
// warnings and errors land at Debug too. A caller logging at Info sees only
// the warnings and errors that matter.
type quietHandler struct {
	slog.Handler
	benign []benign
}

func newQuietHandler(h slog.Handler, benign []benign) quietHandler {
	return quietHandler{h, benign}
}

// Enabled can use the lowering by four alone: a benign record is only ever
// lowered further, never raised.
func (h quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, quiet(l))
}

func quiet(l slog.Level) slog.Level {
	if l >= slog.LevelWarn {
		return l
	}
	return l - 4
}

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level = quiet(r.Level)
	if r.Level >= slog.LevelWarn && h.isBenign(r) {
		r.Level = slog.LevelDebug
		if !h.Handler.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietHandler) isBenign(r slog.Record) bool {
	var errText string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" || a.Key == "error" {
			errText = fmt.Sprint(a.Value.Any())
			return false
		}
		return true
	})
	for _, b := range h.benign {
		if r.Message == b.msg && strings.Contains(errText, b.err) {
			return true
		}
	}
	return false
}

func (h quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(attrs), h.benign}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name), h.benign}
}

// zapToSlog returns a zap logger (what etcd's embed package logs to) that
// writes into h.
func zapToSlog(h slog.Handler) *zap.Logger {
	return zap.New(slogCore{h})
}

// slogCore is a zapcore.Core that hands entries to a slog.Handler.
type slogCore struct{ h slog.Handler }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// attrs renders zap fields through zap's own map encoder, so every field
// type (durations, errors, objects, ...) turns into a plain value.
func attrs(fields []zapcore.Field) []slog.Attr {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		out = append(out, slog.Any(k, enc.Fields[k]))
	}
	return out
}

func (c slogCore) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), slogLevel(l))
}

func (c slogCore) With(fields []zapcore.Field) zapcore.Core {
	return slogCore{c.h.WithAttrs(attrs(fields))}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	r := slog.NewRecord(e.Time, slogLevel(e.Level), e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	r.AddAttrs(attrs(fields)...)
	return c.h.Handle(context.Background(), r)
}

func (c slogCore) Sync() error { return nil }
