# Container images and the local kind cluster (docs/kind.md). Included from the Makefile.
#   make tools                              kubectl, for the manifest tests, and Ceph's radosgw (a
#                                           second real S3 server for the storage tests)
#   make images                             both images, tagged :<version>-<source digest> (what the
#                                           pipeline compiles with; pipelines/images.py) and :<version>
#   make e2e                                cluster, KFP, MinIO, CPU image, then a full pipeline run

CONTAINER_ENGINE ?= $(shell command -v docker >/dev/null 2>&1 && echo docker || echo podman)
KIND             ?= kind
KUBECTL          ?= kubectl
KIND_CLUSTER     ?= pogona
KFP_VERSION      ?= 2.17.2
KFP_NAMESPACE    := kubeflow
# The images bake the default model's pretrained weights (their Dockerfiles' BASE_WEIGHTS_URL); set
# BASE_WEIGHTS_URL to bake others (space-separated .pt URLs, each optionally #sha256=<hex>), or to
# nothing (`make images BASE_WEIGHTS_URL=`) to build without weights. Unset, the Dockerfiles' default holds.
weights_arg = $(if $(filter undefined,$(origin BASE_WEIGHTS_URL)),,--build-arg BASE_WEIGHTS_URL="$(BASE_WEIGHTS_URL)")

# Image names come from pipelines.images, the module the pipeline compiles with: the immutable
# name first, then the moving :<version> tag (for people and the GPU check job; no pipeline uses it).
image_names = $(shell $(BIN)/python -m pipelines.images $(1))
image_name  = $(firstword $(call image_names,$(1)))
GIT_REV    = $(shell git rev-parse --short HEAD)
SUDO       = $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: tools images images-cpu images-cuda kind-up kind-down kind-load kfp-install kfp-ui minio e2e

tools:
	@command -v $(KUBECTL) >/dev/null 2>&1 || { \
	  echo "kubectl not found: installing Debian's kubernetes-client"; \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y kubernetes-client; }
	@$(KUBECTL) kustomize --help >/dev/null
	@command -v radosgw >/dev/null 2>&1 && command -v ceph-osd >/dev/null 2>&1 && command -v ceph-mon >/dev/null 2>&1 || { \
	  echo "radosgw not found: installing Debian's ceph-mon, ceph-osd, radosgw and ceph-common (tests/radosgw.py)"; \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common; }

images: images-cpu images-cuda

images-cpu images-cuda: images-%: $(STAMP)
	@command -v $(CONTAINER_ENGINE) >/dev/null 2>&1 || { \
	  echo "no container engine: install docker or podman, or set CONTAINER_ENGINE"; exit 1; }
	$(CONTAINER_ENGINE) build --file images/$*/Dockerfile \
	  --build-arg VERSION=$(lastword $(subst :, ,$(call image_name,$*))) \
	  --build-arg REVISION=$(GIT_REV) \
	  $(weights_arg) $(foreach name,$(call image_names,$*),--tag $(name)) \
	  .

kind-up:
	@if $(KIND) get clusters | grep -qx '$(KIND_CLUSTER)'; then \
	  echo "kind cluster $(KIND_CLUSTER) already exists"; \
	else \
	  $(KIND) create cluster --name $(KIND_CLUSTER) --config manifests/kind/cluster.yaml --wait 300s; \
	fi

kind-down:
	$(KIND) delete cluster --name $(KIND_CLUSTER)

# Through an archive so that podman images load the same way as docker ones.
kind-load: kind-up images-cpu
	archive=$$(mktemp) && trap 'rm -f "$$archive"' EXIT && \
	$(CONTAINER_ENGINE) save -o "$$archive" $(call image_name,cpu) && \
	$(KIND) load image-archive "$$archive" --name $(KIND_CLUSTER)

kfp-install: kind-up
	$(KUBECTL) apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$(KFP_VERSION)"
	$(KUBECTL) wait --for=condition=established --timeout=120s crd --all
	$(KUBECTL) apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$(KFP_VERSION)"
	$(KUBECTL) -n $(KFP_NAMESPACE) wait --for=condition=Available deployment --all --timeout=1200s
	# a 120 s grace period for pipeline pods (manifests/kfp/training-grace): one key of KFP's ConfigMap
	$(KUBECTL) apply --server-side --force-conflicts --field-manager=pogona -k manifests/kfp/training-grace

kfp-ui:
	@echo "KFP UI on http://localhost:8080 (Ctrl-C to stop)"
	$(KUBECTL) -n $(KFP_NAMESPACE) port-forward svc/ml-pipeline-ui 8080:80

minio: kind-up
	POGONA_NAMESPACE=$(KFP_NAMESPACE) KUBECTL=$(KUBECTL) scripts/minio.sh

e2e: kfp-install minio kind-load
	POGONA_NAMESPACE=$(KFP_NAMESPACE) KUBECTL=$(KUBECTL) POGONA=$(BIN)/pogona PYTHON=$(BIN)/python scripts/e2e.sh
