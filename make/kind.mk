# Container images and the local kind cluster (docs/kind.md). Included from the Makefile.
#   make tools                              kubectl, for the manifest tests, and Ceph's radosgw (a
#                                           second real S3 server for the storage tests)
#   make images                             both images (make/images.mk)
#   make e2e                                cluster, KFP, MinIO, CPU image, then a full pipeline run

KIND             ?= kind
KUBECTL          ?= kubectl
KIND_CLUSTER     ?= pogona
KFP_VERSION      ?= 2.17.2
KFP_NAMESPACE    := kubeflow
SUDO       = $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: tools kind-up kind-down kind-load kfp-install kfp-ui minio e2e

tools:
	@command -v $(KUBECTL) >/dev/null 2>&1 || { \
	  echo "kubectl not found: installing Debian's kubernetes-client"; \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y kubernetes-client; }
	@$(KUBECTL) kustomize --help >/dev/null
	@command -v radosgw >/dev/null 2>&1 && command -v ceph-osd >/dev/null 2>&1 && command -v ceph-mon >/dev/null 2>&1 || { \
	  echo "radosgw not found: installing Debian's ceph-mon, ceph-osd, radosgw and ceph-common (tests/radosgw.py)"; \
	  $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common; }

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
