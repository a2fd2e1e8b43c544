package cache

import (
	"strings"
	"testing"
	"time"
)

func TestWarmMode(t *testing.T) {
	front := &Cache{Spec: Spec{Layout: LayoutFront}.WithDefaults(), Running: true}
	plain := &Cache{Spec: Spec{Layout: LayoutPlain}.WithDefaults(), Running: true}
	tests := []struct {
		name      string
		cache     *Cache
		dataHere  bool
		opts      WarmOptions
		want, err string
	}{
		{"front", front, true, WarmOptions{}, WarmFront, ""},
		{"front, data elsewhere", front, false, WarmOptions{}, WarmFront, ""},
		{"front ignores --into-storage", front, false, WarmOptions{IntoStorage: true}, WarmFront, ""},
		{"front ignores --through-proxy", front, true, WarmOptions{ThroughProxy: true}, WarmFront, ""},
		{"plain, data here", plain, true, WarmOptions{}, WarmStorage, ""},
		{"plain, data elsewhere", plain, false, WarmOptions{}, WarmProxy, ""},
		{"plain --through-proxy", plain, true, WarmOptions{ThroughProxy: true}, WarmProxy, ""},
		{"plain --into-storage, data elsewhere", plain, false, WarmOptions{IntoStorage: true}, "", "--through-proxy"},
		{"remote cache", nil, false, WarmOptions{}, WarmProxy, ""},
		{"remote cache --into-storage", nil, false, WarmOptions{IntoStorage: true}, "", "not on this engine"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := warmMode(&cacheGroup{label: "c", cache: tc.cache}, tc.dataHere, tc.opts)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("warmMode = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestModeText(t *testing.T) {
	now := time.Date(2026, 3, 1, 15, 0, 0, 0, time.Local)
	tests := []struct {
		mode  string
		since time.Time
		want  string
	}{
		{ModeOnline, now.Add(-time.Hour), "online"},
		{ModeOffline, time.Date(2026, 3, 1, 12, 3, 4, 0, time.Local), "upstream unreachable since 12:03, serving cached content"},
		{ModeOffline, time.Date(2026, 2, 27, 23, 59, 0, 0, time.Local), "upstream unreachable since 2026-02-27 23:59, serving cached content"},
	}
	for _, tc := range tests {
		if got := ModeText(tc.mode, tc.since, now); got != tc.want {
			t.Errorf("ModeText(%s, %s) = %q, want %q", tc.mode, tc.since, got, tc.want)
		}
	}
}
