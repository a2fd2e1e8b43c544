// Package netaddr holds the one loopback test both plugins use (pure).
package netaddr

import (
	"net"
	"strings"
)

// IsLoopback reports whether a registry address — host, host:port, optionally followed by a
// /path — names this machine: localhost or a loopback IP (127.0.0.0/8, ::1).
func IsLoopback(addr string) bool {
	host, _, _ := strings.Cut(addr, "/")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
