# shellcheck shell=bash
# Certificates (openssl, EC P-256) and kubeconfigs of this machine's cluster, in ${PKI} and
# ${STATE}; each is made once and kept. Sourced by hack/cluster.sh, which defines the
# addresses and names (NODE_NAME, NODE_IP, APISERVER_PORT, ...) and `log`.

CERT_CNF="[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused"

# cert NAME SUBJECT [SANS] [CA]: key + certificate signed by CA (default: ca)
cert() {
  local name="$1" subj="$2" sans="${3:-}" ca="${4:-ca}"
  [[ -f "${PKI}/${name}.crt" ]] && return 0
  openssl ecparam -name prime256v1 -genkey -noout -out "${PKI}/${name}.key" 2>/dev/null
  local ext=(-addext "basicConstraints=critical,CA:FALSE" -addext "keyUsage=critical,digitalSignature,keyEncipherment"
             -addext "extendedKeyUsage=serverAuth,clientAuth")
  [[ -n "${sans}" ]] && ext+=(-addext "subjectAltName=${sans}")
  openssl req -x509 -new -config <(echo "${CERT_CNF}") -key "${PKI}/${name}.key" -subj "${subj}" -days 3650 \
    -CA "${PKI}/${ca}.crt" -CAkey "${PKI}/${ca}.key" "${ext[@]}" -out "${PKI}/${name}.crt" 2>/dev/null
}

ca() { # NAME CN
  [[ -f "${PKI}/$1.crt" ]] && return 0
  openssl ecparam -name prime256v1 -genkey -noout -out "${PKI}/$1.key" 2>/dev/null
  openssl req -x509 -new -config <(echo "${CERT_CNF}") -key "${PKI}/$1.key" -subj "/CN=$2" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" \
    -out "${PKI}/$1.crt" 2>/dev/null
}

# kubeconfig NAME CERT: a kubeconfig for client certificate pki/CERT.{crt,key}
kubeconfig() {
  local file="${STATE}/$1.kubeconfig" crt="$2"
  [[ -f "${file}" ]] && return 0
  cat >"${file}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mserve
  cluster:
    server: https://127.0.0.1:${APISERVER_PORT}
    certificate-authority-data: $(base64 -w0 "${PKI}/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 "${PKI}/${crt}.crt")
    client-key-data: $(base64 -w0 "${PKI}/${crt}.key")
contexts:
- name: mserve
  context: {cluster: mserve, user: $1}
current-context: mserve
EOF
  chmod 600 "${file}"
}

make_pki() {
  mkdir -p "${PKI}" && chmod 700 "${PKI}"
  ca ca kubernetes-ca
  ca front-proxy-ca front-proxy-ca
  local api_sans="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:${NODE_IP},IP:${KUBERNETES_SVC_IP}"
  cert apiserver "/CN=kube-apiserver" "${api_sans}"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert front-proxy-client "/CN=front-proxy-client" "" front-proxy-ca
  cert admin "/O=system:masters/CN=kubernetes-admin"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kube-proxy "/CN=system:kube-proxy"
  cert kube-router "/CN=system:kube-router"
  cert kubelet-client "/O=system:nodes/CN=system:node:${NODE_NAME}"
  cert kubelet-server "/O=system:nodes/CN=system:node:${NODE_NAME}" "DNS:${NODE_NAME},DNS:localhost,IP:${NODE_IP},IP:127.0.0.1"
  if [[ ! -f "${PKI}/sa.key" ]]; then
    openssl genrsa -out "${PKI}/sa.key" 2048 2>/dev/null
    openssl rsa -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
  fi
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
  kubeconfig kube-proxy kube-proxy
  kubeconfig kube-router kube-router
  kubeconfig kubelet kubelet-client
  log "    certificates (openssl, EC P-256) and kubeconfigs in ${STATE}"
}
