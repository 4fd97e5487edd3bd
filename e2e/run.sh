#!/usr/bin/env bash
# End-to-end test of llmgate on a throwaway kind cluster: builds both images, installs the
# chart, applies e2e/manifests/, and checks injection, routing, a rate limit and a budget
# with the built-in mock provider. Needs docker, kind, kubectl and helm. See e2e/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${CLUSTER_NAME:-llmgate-e2e}"
NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.30.4}"   # native sidecars need >= 1.29
TAG="${IMAGE_TAG:-e2e}"
RELEASE_NS="llmgate-system"
APP_NS="llmgate-e2e"
TIMEOUT="${E2E_TIMEOUT:-180s}"

log() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nE2E FAILED: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done

diagnostics() {
  log "diagnostics"
  kubectl -n "$RELEASE_NS" get pods -o wide || true
  kubectl -n "$RELEASE_NS" logs deploy/llmgate --tail=200 || true
  kubectl -n "$APP_NS" get llmgate,pods,secrets,configmaps -o wide || true
  kubectl -n "$APP_NS" describe pods -l app=e2e-client || true
  kubectl -n "$APP_NS" logs -l app=e2e-client --all-containers --tail=200 || true
  kubectl -n "$APP_NS" get events --sort-by=.lastTimestamp || true
}

cleanup() {
  local status=$?
  if [[ $status -ne 0 ]]; then diagnostics; fi
  if [[ "${KEEP_CLUSTER:-0}" == "1" ]]; then
    log "keeping cluster $CLUSTER (KEEP_CLUSTER=1); delete it with: kind delete cluster --name $CLUSTER"
  else
    log "deleting cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit $status
}
trap cleanup EXIT

log "building images (tag $TAG)"
# The base image by digest (docs/security.md#supply-chain): resolved here from the tag.
PYTHON_IMAGE="${PYTHON_IMAGE:-$(docker buildx imagetools inspect python:3.11-slim-bookworm \
  --format '{{.Name}}@{{.Manifest.Digest}}')}"
docker build -f "$ROOT/Dockerfile.operator" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
  -t "llmgate-operator:$TAG" "$ROOT"
docker build -f "$ROOT/Dockerfile.sidecar" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
  -t "llmgate-sidecar:$TAG" "$ROOT"

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER"
else
  log "creating kind cluster $CLUSTER ($NODE_IMAGE)"
  kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null
kind load docker-image --name "$CLUSTER" "llmgate-operator:$TAG" "llmgate-sidecar:$TAG"

log "installing the chart"
helm upgrade --install llmgate "$ROOT/charts/llmgate" \
  --namespace "$RELEASE_NS" --create-namespace \
  --set fullnameOverride=llmgate \
  --set operator.image.repository=llmgate-operator \
  --set operator.image.tag="$TAG" \
  --set operator.image.pullPolicy=Never \
  --set sidecar.image.repository=llmgate-sidecar \
  --set sidecar.image.tag="$TAG" \
  --set redis.enabled=true \
  --set "rbac.grantNamespaces={$APP_NS}" \
  --set webhook.failurePolicy=Fail \
  --wait --timeout 5m

log "waiting for the operator to patch the webhook CA bundle"
for _ in $(seq 1 60); do
  ca="$(kubectl get mutatingwebhookconfiguration llmgate-sidecar-injector \
        -o jsonpath='{.webhooks[*].clientConfig.caBundle}')"
  [[ -n "${ca// /}" ]] && break
  sleep 2
done
[[ -n "${ca// /}" ]] || fail "caBundle of llmgate-sidecar-injector was never set"

log "applying providers, route and keys"
kubectl apply -f "$ROOT/e2e/manifests/00-namespace.yaml"
kubectl apply -f "$ROOT/e2e/manifests/10-gateway.yaml"
kubectl -n "$APP_NS" wait --for=condition=Ready --timeout="$TIMEOUT" \
  providersecret/mock llmroute/e2e-chat virtualkey/e2e-limited virtualkey/e2e-budget
kubectl -n "$APP_NS" get llmgate

for secret in e2e-limited-llmgate-key e2e-budget-llmgate-key llmgate-config llmgate-credentials; do
  kind_of=secret; [[ "$secret" == llmgate-config ]] && kind_of=configmap
  for _ in $(seq 1 60); do
    kubectl -n "$APP_NS" get "$kind_of" "$secret" >/dev/null 2>&1 && break
    sleep 2
  done
  kubectl -n "$APP_NS" get "$kind_of" "$secret" >/dev/null || fail "$kind_of $secret missing"
done

log "running the client Job"
kubectl -n "$APP_NS" delete job e2e-client --ignore-not-found --wait=true
kubectl apply -f "$ROOT/e2e/manifests/20-client.yaml"

pod=""
for _ in $(seq 1 60); do
  pod="$(kubectl -n "$APP_NS" get pods -l app=e2e-client -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)"
  [[ -n "$pod" ]] && break
  sleep 2
done
[[ -n "$pod" ]] || fail "the client pod was not created"

containers="$(kubectl -n "$APP_NS" get pod "$pod" \
  -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}')"
[[ " $containers " == *" llmgate-sidecar "* ]] || fail "no llmgate-sidecar in pod $pod: $containers"
echo "pod $pod containers: $containers"
base_url="$(kubectl -n "$APP_NS" get pod "$pod" \
  -o jsonpath='{.spec.containers[?(@.name=="client")].env[?(@.name=="OPENAI_BASE_URL")].value}')"
[[ "$base_url" == "http://127.0.0.1:4000/v1" ]] || fail "OPENAI_BASE_URL not injected: '$base_url'"

kubectl -n "$APP_NS" wait --for=condition=complete --timeout="$TIMEOUT" job/e2e-client \
  || fail "the client Job did not complete"
output="$(kubectl -n "$APP_NS" logs "$pod" -c client)"
echo "$output"

log "checking results"
first="$(grep '^E2E first ' <<<"$output" | awk '{print $3}')"
[[ "$first" == "200" ]] || fail "the first request returned '$first', want 200"
grep '^E2E first ' <<<"$output" | grep -q '"choices"' || fail "the first response has no choices"
burst="$(grep '^E2E burst' <<<"$output")"
[[ " $burst " == *" 429 "* ]] || fail "a burst over requestsPerMinute=5 got no 429: $burst"
grep -qi '^E2E budget-429 .*budget' <<<"$output" \
  || fail "spending past the budget got no budget 429: $(grep '^E2E budget' <<<"$output")"

log "E2E PASSED: sidecar injected, request routed to the mock, rate limit and budget enforced"
