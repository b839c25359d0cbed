import timeit, numpy as np
import tinynn.nn as nn
from tinynn.nn import loss as L, activation as A
rng=np.random.default_rng(0)
x=rng.standard_normal((64,784)).astype(np.float32); y=rng.integers(0,10,64)
model=nn.Linear(784,10); lossf=nn.CrossEntropyLoss()
out=model(x); lp=A.log_softmax(out,1)
prep=L._prepare_cross_entropy(out,y,None,-100,'mean',0.0)
g=np.ones((64,10),np.float32)
W=model.weight.data
def fwd_lin(): model(x)
def fwd_loss(): lossf(out,y)
def bwd_loss(): lossf.save_for_backward(lp,prep); lossf.backward()
def bwd_lin(): model.save_for_backward(x,W); model.backward(g, needs_input_grad=False); model.weight.grad=None; model.bias.grad=None
tests = {"fwd_lin":fwd_lin,"fwd_loss":fwd_loss,"bwd_loss":bwd_loss,"bwd_lin":bwd_lin,
 "prepare":lambda: L._prepare_cross_entropy(out,y,None,-100,'mean',0.0),
 "log_softmax":lambda: A.log_softmax(out,1),
 "value":lambda: L._cross_entropy_value(lp,prep,None,'mean',0.0),
 "grad":lambda: L._cross_entropy_grad(1.0,lp,prep,None,'mean',0.0),
 "matmul":lambda: x@W.T, "dW":lambda: g.T@x, "acc":lambda: model.weight.accumulate_grad(W),
}
for k,f in tests.items():
    n=5000; t=min(timeit.repeat(f,number=n,repeat=5))/n*1e6
    print(f"{k:15s} {t:.2f} us")
