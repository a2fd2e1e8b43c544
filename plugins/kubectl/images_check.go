package kubectl

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/bkcache/bkcache/pkg/images"
)

// headManifest is images.HeadFunc over go-containerregistry: a HEAD of the
// manifest, credentials from ~/.docker/config.json. Loopback and private
// (RFC 1918) registries are tried over plain HTTP by go-containerregistry
// itself; insecure adds it for any host and skips TLS verification.
func headManifest(insecure bool) images.HeadFunc {
	var nameOpts []name.Option
	rt := remote.DefaultTransport
	if insecure {
		nameOpts = append(nameOpts, name.Insecure)
		t := remote.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
		rt = t
	}
	return func(ctx context.Context, ref string) (bool, error) {
		r, err := name.ParseReference(ref, nameOpts...)
		if err != nil {
			return false, err
		}
		_, err = remote.Head(r, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithTransport(rt))
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return false, nil
		}
		return err == nil, err
	}
}
