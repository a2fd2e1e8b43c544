package front

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// htpasswd checks Basic credentials against an htpasswd file of bcrypt
// entries, as registry:2's htpasswd access controller does (re-read when the
// file changes). A pair that passed is remembered for a minute, so a pull of
// many blobs does not pay bcrypt on every request.
type htpasswd struct {
	path, realm string

	mu      sync.Mutex
	modTime time.Time
	users   map[string][]byte
	ok      map[[32]byte]time.Time // sha256(file mtime, user, password) -> until
}

const credentialCacheTTL = time.Minute

func newHtpasswd(path, realm string) *htpasswd {
	if realm == "" {
		realm = "basic-realm"
	}
	return &htpasswd{path: path, realm: realm, ok: map[[32]byte]time.Time{}}
}

// check answers 401 (as registry:2 does) and returns false unless r carries
// valid credentials.
func (h *htpasswd) check(w http.ResponseWriter, r *http.Request, repo string) bool {
	user, pass, hasAuth := r.BasicAuth()
	if hasAuth && h.valid(user, pass) {
		return true
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", h.realm))
	var detail any
	if repo != "" {
		type access struct{ Type, Class, Name, Action string }
		actions := []string{"pull"}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodDelete:
			actions = []string{"delete"}
		default:
			actions = []string{"pull", "push"}
		}
		var records []access
		for _, a := range actions {
			records = append(records, access{Type: "repository", Name: repo, Action: a})
		}
		detail = records
	}
	writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required", detail)
	return false
}

func (h *htpasswd) valid(user, pass string) bool {
	info, err := os.Stat(h.path)
	if err != nil {
		return false
	}
	key := sha256.Sum256([]byte(info.ModTime().String() + "\x00" + user + "\x00" + pass))
	h.mu.Lock()
	if until, ok := h.ok[key]; ok && time.Now().Before(until) {
		h.mu.Unlock()
		return true
	}
	if h.users == nil || !info.ModTime().Equal(h.modTime) {
		users, err := readHtpasswd(h.path)
		if err != nil {
			h.mu.Unlock()
			return false
		}
		h.users, h.modTime = users, info.ModTime()
		clear(h.ok)
	}
	hash, known := h.users[user]
	h.mu.Unlock()
	if !known {
		// Spend the time a wrong password costs: no telling which users exist.
		bcrypt.CompareHashAndPassword(dummyHash(), []byte(pass)) //nolint:errcheck
		return false
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
		return false
	}
	h.mu.Lock()
	h.ok[key] = time.Now().Add(credentialCacheTTL)
	h.mu.Unlock()
	return true
}

// readHtpasswd reads user:bcrypt-hash lines; other lines are ignored.
func readHtpasswd(path string) (map[string][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if ok && user != "" {
			users[user] = []byte(hash)
		}
	}
	return users, sc.Err()
}

var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("bkcache"), bcrypt.DefaultCost)
	return h
})
