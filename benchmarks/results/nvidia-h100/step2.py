"""Per-step time of the tutorial's logistic regression: tinynn vs torch CPU vs a bare NumPy loop, interleaved."""
import time, sys, numpy as np, torch, torch.nn.functional as F
import tinynn, tinynn.nn as nn
from tinynn.optim import SGD
rng=np.random.default_rng(0)
x=rng.standard_normal((64,784)).astype(np.float32); y=rng.integers(0,10,64)
model=nn.Linear(784,10); criterion=nn.CrossEntropyLoss(); opt=SGD(model.parameters(), lr=0.5)
def tn_step():
    loss=criterion(model(x),y); model.backward(criterion.backward(), needs_input_grad=False); opt.step(); opt.zero_grad()
def tn_fb():
    loss=criterion(model(x),y); model.backward(criterion.backward(), needs_input_grad=False); model.weight.grad=None; model.bias.grad=None
W=model.weight.data.copy(); b=model.bias.data.copy(); ar=np.arange(64)
def np_step():
    out=x@W.T; out+=b
    e=np.exp(out-out.max(1,keepdims=True)); e/=e.sum(1,keepdims=True)
    loss=-np.log(e[ar,y]).mean()
    e[ar,y]-=1; e*=1/64
    gW=e.T@x; gb=e.sum(0); W.__isub__(0.5*gW); b.__isub__(0.5*gb)
tm=torch.nn.Linear(784,10); xt=torch.tensor(x); yt=torch.tensor(y); topt=torch.optim.SGD(tm.parameters(), lr=0.5)
def torch_step():
    loss=F.cross_entropy(tm(xt),yt); loss.backward(); topt.step(); topt.zero_grad()
def torch_fb():
    loss=F.cross_entropy(tm(xt),yt); loss.backward(); tm.weight.grad=None; tm.bias.grad=None
fns={"torch step":torch_step,"tinynn step":tn_step,"numpy step":np_step,"torch fwd+loss+bwd":torch_fb,"tinynn fwd+loss+bwd":tn_fb}
best={k:1e9 for k in fns}
for f in fns.values():
    for _ in range(300): f()
for r in range(int(sys.argv[1]) if len(sys.argv)>1 else 15):
    for k,f in fns.items():
        n=500; t=time.perf_counter()
        for _ in range(n): f()
        best[k]=min(best[k],(time.perf_counter()-t)/n*1e6)
print(f"torch threads={torch.get_num_threads()}")
for k,v in best.items(): print(f"{k:22s} {v:6.1f} us")
print(f"step speedup vs torch: {best['torch step']/best['tinynn step']:.2f}x (numpy {best['torch step']/best['numpy step']:.2f}x); fwd+loss+bwd: {best['torch fwd+loss+bwd']/best['tinynn fwd+loss+bwd']:.2f}x")
