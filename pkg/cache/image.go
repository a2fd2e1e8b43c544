package cache

import (
	"context"
	"fmt"
	"io"

	"github.com/moby/moby/client"
)

// imageWouldBeFetched says how Up would get an image the engine lacks, for a dry run.
func imageWouldBeFetched(ctx context.Context, eng Engine, image string, opts UpOptions) (string, error) {
	_, err := eng.ImageInspect(ctx, image)
	switch {
	case err == nil && opts.Pull != PullAlways:
		return "", nil
	case err != nil && !isNotFound(err):
		return "", engineError(eng, err)
	case opts.ImageArchive != "":
		return "image " + image + " loaded from " + opts.ImageArchive, nil
	case opts.Pull == PullNever:
		return "", missingImage(image, "--pull never was given")
	}
	return "image " + image + " pulled", nil
}

func ensureImage(ctx context.Context, eng Engine, image, pull string, progress io.Writer) error {
	if pull == "" {
		pull = PullMissing
	}
	if pull != PullAlways {
		_, err := eng.ImageInspect(ctx, image)
		if err == nil {
			return nil
		}
		if !isNotFound(err) {
			return engineError(eng, err)
		}
		if pull == PullNever {
			return missingImage(image, "--pull never was given")
		}
	}
	fmt.Fprintf(progress, "pulling %s\n", image)
	resp, err := eng.ImagePull(ctx, image, client.ImagePullOptions{})
	if err == nil {
		err = resp.Wait(ctx)
	}
	if err != nil {
		return missingImage(image, "pull failed: "+err.Error())
	}
	return nil
}

func missingImage(image, why string) error {
	return fmt.Errorf("image %s is not on this Docker engine (%s); either pull it (docker pull %s), "+
		"or use the release's image archive: docker bkcache up --image bkcache.local/registry:2 --image-archive bkcache-VERSION-registry-image-linux-ARCH.tar.gz, "+
		"or build that image here from Debian's docker-registry package with registry-image.sh (in the release archive and in scripts/) and pass --image bkcache.local/registry:2", image, why, image)
}
