package front

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// storeFile stores the file at path as blob digest of repo through the local
// registry:2, which checks the digest again as it stores it: POST opens an
// upload, PATCH sends the bytes, PUT with the digest commits. On any failure
// the upload is cancelled with DELETE on its latest URL, so nothing stays
// under _uploads. (registry:2 2.8 cannot cancel an upload whose commit failed
// itself, and refuses a DELETE whose upload state names another offset: the
// URL PATCH returns carries the right one.)
func (s *Server) storeFile(ctx context.Context, repo, digest, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	resp, err := s.localDo(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, 0)
	if err != nil {
		return err
	}
	resp.Body.Close()
	session, err := uploadLocation(resp, http.StatusAccepted)
	if err != nil {
		return fmt.Errorf("the local registry answered %s to an upload of %s", resp.Status, digest)
	}
	resp, err = s.localDo(ctx, http.MethodPatch, session.RequestURI(), f, info.Size())
	if err != nil {
		s.cancelUpload(ctx, session.RequestURI())
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	next, err := uploadLocation(resp, http.StatusAccepted)
	if err != nil {
		s.cancelUpload(ctx, session.RequestURI())
		return fmt.Errorf("the local registry answered %s to the bytes of %s: %s", resp.Status, digest, strings.TrimSpace(string(body)))
	}
	commit := *next
	q := commit.Query()
	q.Set("digest", digest)
	commit.RawQuery = q.Encode()
	resp, err = s.localDo(ctx, http.MethodPut, commit.RequestURI(), nil, 0)
	if err != nil {
		s.cancelUpload(ctx, next.RequestURI())
		return err
	}
	body, _ = io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		s.cancelUpload(ctx, next.RequestURI())
		return fmt.Errorf("the local registry answered %s to storing %s: %s", resp.Status, digest, strings.TrimSpace(string(body)))
	}
	return nil
}

// uploadLocation is an upload's next URL, from an answer with status want.
func uploadLocation(resp *http.Response, want int) (*url.URL, error) {
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != want || err != nil || loc.Path == "" {
		return nil, fmt.Errorf("no upload location")
	}
	return loc, nil
}
