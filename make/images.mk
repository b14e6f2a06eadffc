# The pipeline's container images (images/Dockerfile, docs/kind.md). Included from the Makefile.
#   make images        both images, tagged :<version>-<source digest> (what the pipeline compiles
#                      with; pipelines/images.py) and :<version>
#   make test-images   starts a Docker engine if none answers, builds both images, then the images
#                      tier: the demo pipeline through kfp.local's DockerRunner, the CPU image as
#                      Kubernetes and OpenShift run it, the CUDA image's torch (tests/images/containers)
#
# BASE_IMAGE, TORCH_INDEX_URL and BASE_WEIGHTS_URL, when set (even to nothing, e.g.
# `make images BASE_WEIGHTS_URL=`), are passed to the build as given; unset, the Dockerfile's public
# defaults hold wherever they can be reached (scripts/build-image.sh says what it takes instead).

CONTAINER_ENGINE ?= $(shell command -v docker >/dev/null 2>&1 && echo docker || echo podman)
# Image names come from pipelines.images, the module the pipeline compiles with: the immutable
# name first, then the moving :<version> tag (for people and the GPU check job; no pipeline uses it).
image_names = $(shell $(BIN)/python -m pipelines.images $(1))
image_name  = $(firstword $(call image_names,$(1)))
GIT_REV     = $(shell git rev-parse --short HEAD)

.PHONY: images images-cpu images-cuda test-images

images: images-cpu images-cuda

images-cpu images-cuda: images-%: $(STAMP)
	@command -v $(CONTAINER_ENGINE) >/dev/null 2>&1 || { \
	  echo "no container engine: install docker or podman, or set CONTAINER_ENGINE"; exit 1; }
	CONTAINER_ENGINE=$(CONTAINER_ENGINE) VERSION=$(lastword $(subst :, ,$(call image_name,$*))) \
	  REVISION=$(GIT_REV) scripts/build-image.sh $* $(call image_names,$*)

# Layers older than three days go first: each code change leaves ~13 GB of superseded layers behind,
# and the newer ones are the cache of the next build.
test-images: $(STAMP)
	scripts/dockerd.sh
	$(CONTAINER_ENGINE) image prune --force --filter until=72h
	$(MAKE) images
	POGONA_IMAGE_TESTS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/images/containers
