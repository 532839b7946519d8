#!/usr/bin/env python3
"""Writes the YAML fixtures shared by the operator script tests into each
txtar (a txtar must be self-contained). Run it from this directory after
changing a fixture here; the script and the files that are not fixtures
(the expected tables) are kept as they are."""
import glob, json, os, re

EGRESS = 'node-role.deckhouse.io/egress'
NODES = {'lab-egress-a': ('198.18.0.11', '203.0.113.11', True),
         'lab-egress-b': ('198.18.0.12', '203.0.113.12', True),
         'lab-worker':   ('198.18.0.13', '203.0.113.13', False)}

def node(name, ready=True, cordoned=False, egress=None, extra_labels=None):
    ip, _, eg = NODES[name]
    eg = eg if egress is None else egress
    labels = {'kubernetes.io/hostname': name}
    if eg:
        labels[EGRESS] = ''
    labels.update(extra_labels or {})
    lab = ''.join(f'\n    {k}: "{v}"' for k, v in labels.items())
    return f'''apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels:{lab}
spec:
  unschedulable: {str(cordoned).lower()}
status:
  addresses:
  - {{type: InternalIP, address: {ip}}}
  conditions:
  - {{type: Ready, status: "{'True' if ready else 'False'}"}}
'''

def pod(name, ready=True):
    return f'''apiVersion: v1
kind: Pod
metadata:
  name: cilium-{name}
  namespace: kube-system
  labels: {{k8s-app: cilium}}
spec:
  nodeName: {name}
  containers: [{{name: cilium-agent, image: cilium}}]
status:
  conditions:
  - {{type: Ready, status: "{'True' if ready else 'False'}"}}
'''

def lease(name, gateways, renew='2026-01-01T00:00:00.000000Z', duration=4, raw=None, restart=None):
    """gateways: name -> True (ready with the node's public IP), a reason
    string (not ready), or a dict (the report as is). raw, when given, is
    the annotation's text as is (gateways is then ignored)."""
    _, pub, _ = NODES[name]
    restart_line = '' if restart is None else f'\n    egressha.io/restart-grace-seconds: "{restart}"'
    rep = {g: (ok if isinstance(ok, dict) else {'ready': True, 'egressIP': pub} if ok is True else {'ready': False, 'reason': ok})
           for g, ok in gateways.items()}
    return f'''apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: egressha-{name}
  namespace: kube-system
  labels: {{app.kubernetes.io/component: egressha-heartbeat}}
  annotations:
    egressha.io/gateways: '{raw if raw is not None else json.dumps(rep, sort_keys=True, separators=(",", ":"))}'{restart_line}
spec:
  holderIdentity: {name}
  leaseDurationSeconds: {duration}
  renewTime: "{renew}"
'''

def gateway(name, selector=None, order=None, failback=None, status_active=None, hold_down=None):
    selector = selector or {EGRESS: ''}
    sel = ''.join(f'\n    {k}: "{v}"' for k, v in selector.items())
    s = f'''apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGateway
metadata:
  name: {name}
spec:
  nodeSelector:{sel}
  sourceIP:
    mode: PrimaryIPFromEgressGatewayNodeInterface
    primaryIPFromEgressGatewayNodeInterface:
      interfaceName: eth1
'''
    if order or failback or hold_down:
        s += '  selection:\n'
        if order:
            s += f'    order: {order}\n'
        if failback:
            s += f'    failback: {failback}\n'
        if hold_down:
            s += f'    holdDown: {hold_down}\n'
    if status_active:
        s += f'status:\n  activeNodeName: {status_active}\n'
    return s

def vip_gateway(name, ip):
    return f'''apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGateway
metadata:
  name: {name}
spec:
  nodeSelector:
    {EGRESS}: ""
  sourceIP:
    mode: VirtualIPAddress
    virtualIPAddress:
      ip: {ip}
      interfaces: [eth1]
'''

VIP = '203.0.113.50'

def vip_lease(name, renew, announcing=False, duplicate='', message=''):
    rep = {'ready': True, 'egressIP': VIP}
    if announcing:
        rep['announcing'] = True
    if duplicate:
        rep['duplicate'] = duplicate
    if message:
        rep['message'] = message
    return lease(name, {'vip': rep}, renew=renew)

def policy(name, gw):
    return f'''apiVersion: network.deckhouse.io/v1alpha1
kind: EgressGatewayPolicy
metadata:
  name: {name}
spec:
  egressGatewayName: {gw}
  destinationCIDRs: [0.0.0.0/0]
  selectors:
  - podSelector:
      matchLabels: {{app: backend}}
'''

def cegp(name, annotation=None):
    ann = f"\n  annotations:\n    egressha.io/gateway-nodes: '{annotation}'" if annotation else ''
    return f'''apiVersion: cilium.io/v2
kind: CiliumEgressGatewayPolicy
metadata:
  name: {name}{ann}
spec:
  selectors:
  - podSelector:
      matchLabels:
        app: nginx
        io.kubernetes.pod.namespace: default
  destinationCIDRs: ["0.0.0.0/0", "::/0"]
  egressGateway:
    nodeSelector:
      matchLabels: {{kubernetes.io/hostname: lab-egress-b}}
  egressGateways:
  - nodeSelector:
      matchLabels: {{{EGRESS}: ""}}
    interface: eth1
  - nodeSelector:
      matchLabels: {{kubernetes.io/hostname: lab-worker}}
    egressIP: 203.0.113.13
'''

ALL = ['lab-egress-a', 'lab-egress-b', 'lab-worker']

def base(gws):
    f = {}
    for n in ALL:
        f[f'node-{n}.yaml'] = node(n)
        f[f'pod-{n}.yaml'] = pod(n)
        f[f'lease-{n}.yaml'] = lease(n, {g: True for g in gws})
    return f

FIXTURES = {
    'basic.txtar': lambda: {**base(['gw']), 'gw.yaml': gateway('gw'), 'policy.yaml': policy('pol', 'gw'),
        'node-lab-egress-a-unlabelled.yaml': node('lab-egress-a', egress=False)},
    'cordon.txtar': lambda: {**base(['gw']), 'gw.yaml': gateway('gw'),
        'node-lab-egress-a-cordoned.yaml': node('lab-egress-a', cordoned=True)},
    'failback-never.txtar': lambda: {**base(['gw']), 'gw.yaml': gateway('gw', failback='Never'),
        'node-lab-egress-a-cordoned.yaml': node('lab-egress-a', cordoned=True)},
    'restart-grace.txtar': lambda: {**base(['gw']), 'gw.yaml': gateway('gw'),
        'pod-lab-egress-a-notready.yaml': pod('lab-egress-a', ready=False),
        'pod-lab-egress-b-notready.yaml': pod('lab-egress-b', ready=False),
        'lease-lab-egress-a-restarting.yaml': lease('lab-egress-a', {'gw': True}, renew='2026-01-01T00:00:01.000000Z', restart=20),
        'lease-lab-egress-a-back.yaml': lease('lab-egress-a', {'gw': True}, renew='2026-01-01T00:00:07.000000Z'),
        'lease-lab-egress-a-restarting2.yaml': lease('lab-egress-a', {'gw': True}, renew='2026-01-01T00:00:08.000000Z', restart=20),
        'lease-lab-egress-b-restarting.yaml': lease('lab-egress-b', {'gw': True}, renew='2026-01-01T00:00:30.000000Z', restart=20)},
    'agent-not-ready.txtar': lambda: {**base(['gw']), 'gw.yaml': gateway('gw'),
        'pod-lab-egress-a-notready.yaml': pod('lab-egress-a', ready=False)},
    'heartbeat-expiry.txtar': lambda: {**base(['gw']), 'gw.yaml': gateway('gw'),
        'lease-lab-egress-b-renewed.yaml': lease('lab-egress-b', {'gw': True}, renew='2026-01-01T00:00:04.000000Z'),
        'lease-lab-egress-a-interface-missing.yaml': lease('lab-egress-a', {'gw': 'InterfaceMissing'}, renew='2026-01-01T00:00:05.000000Z'),
        'lease-lab-egress-a-renewed.yaml': lease('lab-egress-a', {'gw': True}, renew='2026-01-01T00:00:06.000000Z'),
        'lease-lab-egress-b-renewed2.yaml': lease('lab-egress-b', {'gw': True}, renew='2026-01-01T00:00:06.000000Z')},
    'clock-skew.txtar': lambda: {**base(['gw']), 'gw.yaml': gateway('gw'),
        'lease-lab-egress-b-behind-1.yaml': lease('lab-egress-b', {'gw': True}, renew='2025-12-31T23:50:01.000000Z'),
        'lease-lab-egress-b-behind-2.yaml': lease('lab-egress-b', {'gw': True}, renew='2025-12-31T23:50:04.000000Z')},
    'shared-nodes.txtar': lambda: {**base(['gw-public', 'gw-all']),
        'gw-public.yaml': gateway('gw-public'),
        'gw-all.yaml': gateway('gw-all', selector={'kubernetes.io/os': 'linux'}),
        **{f'node-{n}.yaml': node(n, extra_labels={'kubernetes.io/os': 'linux'}) for n in ALL},
        'node-lab-egress-a-cordoned.yaml': node('lab-egress-a', cordoned=True, extra_labels={'kubernetes.io/os': 'linux'})},
    'spread.txtar': lambda: {**{k: v for k, v in base([f'gw-{i}' for i in range(10)]).items()},
        **{f'node-{n}.yaml': node(n, egress=True) for n in ALL},
        **{f'gw-{i}.yaml': gateway(f'gw-{i}', order='Spread') for i in range(10)},
        'node-lab-worker-cordoned.yaml': node('lab-worker', egress=True, cordoned=True)},
    'no-eligible.txtar': lambda: {**base(['gw']), 'gw.yaml': gateway('gw'),
        'policy.yaml': policy('pol', 'gw'), 'policy-missing-gw.yaml': policy('pol-missing', 'no-such-gw'),
        'node-lab-egress-a-notready.yaml': node('lab-egress-a', ready=False),
        'node-lab-egress-b-cordoned.yaml': node('lab-egress-b', cordoned=True)},
    'vip.txtar': lambda: {**{f'node-{n}.yaml': node(n) for n in ALL}, **{f'pod-{n}.yaml': pod(n) for n in ALL},
        'gw-vip.yaml': vip_gateway('vip', VIP),
        'lease-lab-egress-a.yaml': vip_lease('lab-egress-a', '2026-01-01T00:00:00.000000Z'),
        'lease-lab-egress-b.yaml': vip_lease('lab-egress-b', '2026-01-01T00:00:00.000000Z'),
        'lease-lab-egress-a-announcing.yaml': vip_lease('lab-egress-a', '2026-01-01T00:00:01.000000Z', announcing=True),
        'lease-lab-egress-a-duplicate.yaml': vip_lease('lab-egress-a', '2026-01-01T00:00:02.000000Z', announcing=True,
            duplicate='02:00:00:00:00:99 on eth1 (reply)'),
        'lease-lab-egress-a-withdrawn.yaml': vip_lease('lab-egress-a', '2026-01-01T00:00:03.000000Z'),
        'lease-lab-egress-b-waiting.yaml': vip_lease('lab-egress-b', '2026-01-01T00:00:03.000000Z',
            message='waiting for lab-egress-a (its Lease expires in 3.2s) to withdraw the virtual IP'),
        'lease-lab-egress-b-announcing.yaml': vip_lease('lab-egress-b', '2026-01-01T00:00:03.500000Z', announcing=True),
        'node-lab-egress-a-cordoned.yaml': node('lab-egress-a', cordoned=True)},
    'cegp.txtar': lambda: {**base([]), 'cegp.yaml': cegp('egress-test'),
        'lease-lab-egress-b-renewed.yaml': lease('lab-egress-b', {}, renew='2026-01-01T00:00:04.000000Z'),
        'lease-lab-worker-renewed.yaml': lease('lab-worker', {}, renew='2026-01-01T00:00:04.000000Z'),
        'lease-lab-egress-a-renewed.yaml': lease('lab-egress-a', {}, renew='2026-01-01T00:00:06.000000Z'),
        'lease-lab-egress-b-renewed2.yaml': lease('lab-egress-b', {}, renew='2026-01-01T00:00:06.000000Z'),
        'node-lab-worker-notready.yaml': node('lab-worker', ready=False),
        'node-lab-egress-b-cordoned.yaml': node('lab-egress-b', cordoned=True)},
    'cegp-upstream.txtar': lambda: {**base([]), 'cegp.yaml': cegp('egress-test'),
        'node-lab-worker-notready.yaml': node('lab-worker', ready=False),
        'node-lab-egress-a-unlabelled.yaml': node('lab-egress-a', egress=False)},
    'bounded-input.txtar': lambda: {**base([]), 'gw.yaml': gateway('gw'), 'gw-vip.yaml': vip_gateway('vip', VIP),
        # Claims to stay fresh for 68 years; its VIP message is 40 KB.
        'lease-lab-egress-a-forever.yaml': lease('lab-egress-a', {'gw': True,
            'vip': {'ready': True, 'egressIP': VIP, 'message': 'x' * 40000}}, duration=2**31 - 1),
        'lease-lab-egress-b-malformed.yaml': lease('lab-egress-b', {}, raw='{"gw":'),
        'lease-lab-egress-b-unknown-reason.yaml': lease('lab-egress-b', {'gw': 'Foo', 'vip': {'ready': True, 'egressIP': VIP}},
            renew='2026-01-01T00:00:01.000000Z'),
        **{f'lease-lab-egress-b-renewed{i}.yaml': lease('lab-egress-b', {'gw': True, 'vip': {'ready': True, 'egressIP': VIP}},
            renew=f'2026-01-01T00:00:0{i}.000000Z') for i in (3, 6, 9)}},
    'probe-liveness.txtar': lambda: {**base(['gw', 'vip']), 'gw.yaml': gateway('gw'), 'gw-vip.yaml': vip_gateway('vip', VIP),
        **{f'lease-{n}-renewed.yaml': lease(n, {'gw': True, 'vip': True}, renew='2026-01-01T00:00:12.000000Z') for n in ALL}},
    'hold-down.txtar': lambda: {**base(['gw', 'gw-default']), 'gw.yaml': gateway('gw', hold_down='1s'),
        'gw-default.yaml': gateway('gw-default'),
        'node-lab-egress-a-cordoned.yaml': node('lab-egress-a', cordoned=True)},
    'first-sight.txtar': lambda: {**base(['gw']), 'gw.yaml': gateway('gw'),
        'lease-lab-egress-a.yaml': lease('lab-egress-a', {'gw': True}, renew='2025-12-31T23:59:58.000000Z'),
        'lease-lab-egress-b-renewed.yaml': lease('lab-egress-b', {'gw': True}, renew='2026-01-01T00:00:03.000000Z')},
    'leader-restart.txtar': lambda: {**base(['gw', 'gw-imm']),
        'gw.yaml': gateway('gw', failback='Never', status_active='lab-egress-b'),
        'gw-imm.yaml': gateway('gw-imm', status_active='lab-egress-a')},
    'leader-term.txtar': lambda: {**base(['gw']),
        'gw.yaml': gateway('gw', failback='Never', status_active='lab-egress-b'),
        'gw-moved.yaml': gateway('gw', failback='Never', status_active='lab-egress-a'),
        'policy.yaml': policy('pol', 'gw'), 'cegp.yaml': cegp('egress-test'),
        'cegp-moved.yaml': cegp('egress-test', annotation='[{"index":0,"node":"lab-egress-b"}]'),
        'node-lab-worker-notready.yaml': node('lab-worker', ready=False)},
}

def parse(text):
    """Splits a txtar into its script and its files, in order."""
    parts = re.split(r'^-- (\S+) --\n', text, flags=re.M)
    return parts[0], dict(zip(parts[1::2], parts[2::2]))

for path in sorted(glob.glob('*.txtar')):
    with open(path) as f:
        script, files = parse(f.read())
    fixtures = FIXTURES[os.path.basename(path)]()
    kept = {n: b for n, b in files.items() if n.endswith('.table') or n not in fixtures and not n.endswith('.yaml')}
    out = script.rstrip('\n') + '\n'
    out += ''.join(f'\n-- {name} --\n{body.rstrip(chr(10))}\n' for name, body in kept.items())
    out += ''.join(f'\n-- {name} --\n{body}' for name, body in sorted(fixtures.items()))
    with open(path, 'w') as f:
        f.write(out)
