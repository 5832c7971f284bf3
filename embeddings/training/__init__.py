"""Fine-tuning FaceNet on a folder of people (the LFW layout): data, augmentation, activation cache, P x K
sampler, triplet/contrastive losses with online mining, the fit loop, and the model directory it writes."""
