package front

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// registryError is one entry of registry:2's error body.
type registryError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail"`
}

// writeError answers as registry:2 does: JSON {"errors":[…]} with its headers.
func writeError(w http.ResponseWriter, status int, code, message string, detail any) {
	body, _ := json.Marshal(struct {
		Errors []registryError `json:"errors"`
	}{[]registryError{{Code: code, Message: message, Detail: detail}}})
	h := w.Header()
	if status != http.StatusRequestedRangeNotSatisfiable {
		h.Del("Content-Range")
	}
	h.Del("Docker-Content-Digest")
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Docker-Distribution-Api-Version", "registry/2.0")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck // the client may be gone
}

// codeFor is the registry error code registry:2 uses for a status it relays.
func codeFor(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "UNAUTHORIZED"
	case http.StatusForbidden:
		return "DENIED"
	case http.StatusNotFound:
		return "BLOB_UNKNOWN"
	case http.StatusTooManyRequests:
		return "TOOMANYREQUESTS"
	case http.StatusRequestedRangeNotSatisfiable:
		return "RANGE_INVALID"
	case http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	default:
		return "UNKNOWN"
	}
}
