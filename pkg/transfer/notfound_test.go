package transfer

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func TestIsNotFound(t *testing.T) {
	diag := func(code transport.ErrorCode, status int) error {
		return fmt.Errorf("GET manifest: %w", &transport.Error{Errors: []transport.Diagnostic{{Code: code}}, StatusCode: status})
	}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"manifest unknown", diag(transport.ManifestUnknownErrorCode, http.StatusNotFound), true},
		{"name unknown", diag(transport.NameUnknownErrorCode, http.StatusNotFound), true},
		{"a bare 404", &transport.Error{StatusCode: http.StatusNotFound}, true},
		{"unauthorized", diag(transport.UnauthorizedErrorCode, http.StatusUnauthorized), false},
		{"too many requests", diag(transport.TooManyRequestsErrorCode, http.StatusTooManyRequests), false},
		{"a broken link", errors.New("read: connection reset by peer"), false},
	} {
		if got := IsNotFound(tt.err); got != tt.want {
			t.Errorf("%s: IsNotFound = %v, want %v", tt.name, got, tt.want)
		}
	}
}
