package blobfetch

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// A download never exceeds the size it may have: the caller's (from the
// manifest), else the source's Content-Length, else MaxSize.
func TestFetchSizeBounds(t *testing.T) {
	blob, dgst := randomBlob(t, 100<<10)
	for _, tc := range []struct {
		name     string
		declared int64 // -1: unknown
		maxSize  int64
		header   string // Content-Length sent; "" = none (chunked)
		extra    int    // bytes sent after the blob
		wantErr  error
	}{
		{"declared, true", int64(len(blob)), 0, strconv.Itoa(len(blob)), 0, nil},
		{"undeclared, chunked, true", -1, 0, "", 0, nil},
		{"declared, chunked, endless", int64(len(blob)), 0, "", 1 << 20, ErrTooLarge},
		{"declared, announces more", int64(len(blob)), 0, strconv.Itoa(len(blob) + 10), 10, ErrTooLarge},
		{"undeclared, announces more than the cap", -1, 50 << 10, strconv.Itoa(len(blob)), 0, ErrTooLarge},
		{"undeclared, chunked beyond the cap", -1, 50 << 10, "", 0, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.header != "" {
					w.Header().Set("Content-Length", tc.header)
				}
				w.WriteHeader(http.StatusOK)
				w.Write(blob)
				w.Write(bytes.Repeat([]byte{'x'}, tc.extra))
			}))
			defer srv.Close()
			f := &Fetcher{MaxSize: tc.maxSize, Retries: 1}
			var out bytes.Buffer
			d, err := f.OpenSized(context.Background(), srv.URL, dgst, tc.declared)
			if err == nil {
				_, err = d.Copy(context.Background(), &out)
			}
			if !errors.Is(err, tc.wantErr) && !(tc.wantErr == nil && err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			limit := int64(len(blob))
			if tc.maxSize > 0 && tc.declared < 0 {
				limit = min(limit, tc.maxSize)
			}
			if int64(out.Len()) > limit {
				t.Errorf("wrote %d bytes, more than %d", out.Len(), limit)
			}
			if tc.wantErr == nil && !bytes.Equal(out.Bytes(), blob) {
				t.Errorf("wrote %d bytes, not the blob", out.Len())
			}
		})
	}
}
