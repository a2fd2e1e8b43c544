package netaddr

import "testing"

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"localhost": true, "localhost:5000": true, "LOCALHOST:5000/v2/x": true, "127.0.0.1": true, "127.1.2.3:5500": true,
		"[::1]:5000": true, "::1": true, "[::1]": true, "127.0.0.1:5000/charts": true,
		"10.0.0.5:5500": false, "hub.bktencent.com": false, "localhost.example.com": false, "": false, "[fd00::1]:5000": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
