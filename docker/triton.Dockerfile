# syntax=docker/dockerfile:1
# Triton Inference Server image for the gpu-triton overlay (k8s/overlays/gpu-triton).
#
#   docker build -f docker/triton.Dockerfile -t registry.example.com/surrogate-faces-triton:24.12 .
#
# The models are NOT baked in: every pod stages the pinned version from the model-repository volume
# (k8s/components/model-staging/stage-models.sh), so one image serves every model version and a model
# rollout needs no image build. Nothing in the image downloads anything at run time.
ARG TRITON_VERSION=24.12
FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3

# The exported models are ONNX: the onnxruntime backend runs them (TensorRT plans too, if exported
# with --tensorrt). The other backends only add attack surface and start-up time, so they go.
RUN set -eux; \
    cd /opt/tritonserver/backends; \
    for backend in *; do \
      case "$backend" in onnxruntime|tensorrt) ;; *) rm -rf "$backend" ;; esac; \
    done

# The stage-models init container runs in this image: it needs sh, cp, ls, grep, sort (all present).
# Run as the image's unprivileged user (uid 1000), matching runAsUser in triton-deployment.yaml.
USER 1000:1000
WORKDIR /tmp
EXPOSE 8000 8001 8002
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh"]
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=none"]
